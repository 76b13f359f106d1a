package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"go.yaml.in/yaml/v2"
)

// metricName finds the fleethub metrics an expression names.
var metricName = regexp.MustCompile(`\bfleethub_[a-z_]+`)

// The shipped Grafana dashboard and Prometheus alerts name only metrics a
// node serves from its start (labelled counters at 0 included), and each
// file is valid: JSON, and rule groups whose every rule has an alert name
// and an expression.
func TestObservabilityFilesNameServedMetrics(t *testing.T) {
	root := filepath.Join("..", "..", "docs")
	dash, err := os.ReadFile(filepath.Join(root, "grafana", "fleethub.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("docs/grafana/fleethub.json: %v", err)
	}
	named := map[string]string{} // metric -> where
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				named[m] = "dashboard panel " + p.Title
			}
		}
	}
	alerts, err := os.ReadFile(filepath.Join(root, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(alerts, &rules); err != nil {
		t.Fatalf("docs/prometheus/alerts.yml: %v", err)
	}
	if len(rules.Groups) == 0 {
		t.Fatal("docs/prometheus/alerts.yml: no rule group")
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("alert rule %+v: wants a name and an expression", r)
			}
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				named[m] = "alert " + r.Alert
			}
		}
	}

	served := scrape(t)
	for m, where := range named {
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suf); ok && served[b+"_bucket"] {
				base = b + "_bucket"
			}
		}
		if !served[base] && !served[m] {
			t.Errorf("%s names %s, which a fresh node does not serve", where, m)
		}
	}
	if len(named) < 15 {
		t.Errorf("only %d metrics named by the dashboard and alerts", len(named))
	}
}

// scrape starts a node (embedded NATS) and returns the names of the
// metric series its /metrics serves before any traffic.
func scrape(t *testing.T) map[string]bool {
	t.Helper()
	o := options{
		listen: freeAddr(t), natsListen: "127.0.0.1:-1", dataDir: filepath.Join(t.TempDir(), "data"),
		nodeID: "obs-1", masterSecret: string(hubtest.MasterSecret), adminPassword: "pw",
		pingInterval: 10 * time.Second, pongWait: 15 * time.Second, authTimeout: 5 * time.Second,
		tokenTTL: time.Hour, serviceTimeout: time.Second, queueBytes: 1 << 20, replicas: 1, maxMessageBytes: 65536,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		<-done
	}()
	var body string
	natstest.Eventually(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + o.listen + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		resp, err = http.Get("http://" + o.listen + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	served := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		served[name] = true
	}
	for _, want := range []string{"fleethub_build_info", "fleethub_auth_failures_total", "fleethub_presence_transitions_total"} {
		if !served[want] {
			t.Errorf("/metrics lacks %s; it serves %v", want, slices.Sorted(maps.Keys(served)))
		}
	}
	return served
}
