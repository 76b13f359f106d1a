package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
)

// devsimTLSNode starts a node serving WSS with a certificate of ca and
// returns it with its wss:// URL.
func devsimTLSNode(t *testing.T, ca *testpki.CA) (*hubtest.Node, string) {
	t.Helper()
	leaf := ca.Server(t, "hub")
	n := hubtest.StartNode(t, natstest.Run(t), "n1", hubtest.TLS(leaf.CertFile, leaf.KeyFile))
	return n, "wss://" + n.Serve(t) + "/ws"
}

// runDevsim runs devsim with args, bounded so that a run that does not
// stop by itself fails the test instead of hanging it.
func runDevsim(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, args, noEnv, &out, &errb)
	if ctx.Err() != nil {
		t.Fatalf("devsim %q did not stop by itself; stderr:\n%s", args, errb.String())
	}
	return code, out.String(), errb.String()
}

func TestLoadOverTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	_, url := devsimTLSNode(t, ca)
	code, out, stderr := runDevsim(t, "--url", url, "--tls-ca", ca.File, "--master-secret", string(hubtest.MasterSecret),
		"--load", "--devices", "5", "--duration", "500ms", "--status-interval", "100ms", "--json", "--log-level", "error")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep LoadReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	if rep.Connect.Connected != 5 || rep.Status.OK == 0 || rep.Errors() != 0 {
		t.Fatalf("report over wss: %s", out)
	}
}

func TestSimulationOverTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	n, url := devsimTLSNode(t, ca)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--url", url, "--tls-ca", ca.File, "--master-secret", string(hubtest.MasterSecret),
			"--devices", "3", "--disconnect-rate", "0", "--log-level", "error"}, noEnv, &bytes.Buffer{}, &errb)
	}()
	natstest.Eventually(t, 15*time.Second, func() error {
		if c := n.Hub.SessionCount(); c != 3 {
			return fmt.Errorf("%d sessions, want 3", c)
		}
		return nil
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("devsim did not stop")
	}
}

// TestTLSUntrusted: without the CA (or with another one), both modes stop
// at once with exit 1 and one error line naming the x509 reason and
// --tls-ca, rather than every device retrying for ever.
func TestTLSUntrusted(t *testing.T) {
	ca := testpki.NewCA(t)
	_, url := devsimTLSNode(t, ca)
	other := testpki.NewCA(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"simulation, no CA", nil},
		{"simulation, another CA", []string{"--tls-ca", other.File}},
		{"load, no CA", []string{"--load", "--duration", "500ms"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--url", url, "--master-secret", "s", "--devices", "20"}, c.args...)
			code, out, stderr := runDevsim(t, args...)
			t.Logf("stderr: %s", stderr)
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q: want 1 and nothing", code, out)
			}
			// One error line for the run, not a warning per device.
			var errLines []string
			for _, l := range strings.Split(stderr, "\n") {
				if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 || !strings.Contains(errLines[0], "x509") || !strings.Contains(errLines[0], "--tls-ca") {
				t.Fatalf("stderr %q: want one error line naming x509 and --tls-ca", stderr)
			}
		})
	}
}

func TestTLSCAUsage(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "x")
	for _, file := range []string{leaf.KeyFile + ".none", leaf.KeyFile} { // missing; no certificate in it
		code, _, stderr := runDevsim(t, "--dev", "--tls-ca", file)
		if code != 2 || !strings.Contains(stderr, "--tls-ca") {
			t.Errorf("--tls-ca %s: exit %d, stderr %q", file, code, stderr)
		}
	}
}
