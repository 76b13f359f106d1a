// Package loadtest is a load harness for the hub: it builds cmd/hub, runs it
// as a child process on free loopback ports, connects many authenticated
// device sessions, pushes through NATS, and measures the child's memory and
// CPU from /proc.
//
// The library has no build tag so it stays compiled and vetted with the rest
// of the module; the load test itself (load_test.go) runs only with
// -tags load. Linux only: process figures come from /proc.
package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DevMasterSecret mirrors devMasterSecret in cmd/hub: the public master
// secret every --dev node uses, from which device keys derive.
const DevMasterSecret = "fleethub-dev-master-secret-do-not-use-in-production"

// Bounds of the hub's process lifecycle.
const (
	healthTimeout = 30 * time.Second // StartHub waits at most this for /healthz 200
	stopGrace     = 10 * time.Second // Stop sends SIGKILL after this
	buildTimeout  = 5 * time.Minute  // BuildHub gives up after this
	httpTimeout   = 5 * time.Second  // one /healthz or /metrics request
)

// ModuleRoot walks up from the working directory to the directory holding
// go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("loadtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildHub runs `go build -o dir/hub ./cmd/hub` from the module root and
// returns the binary's path.
func BuildHub(dir string) (string, error) { return goBuild(dir, "hub", "./cmd/hub") }

// Hub is a running hub child process. Its PID, LogPath, Exited, Kill,
// Signal, Wait and LogTail are those of the child.
type Hub struct {
	*child
	HTTPURL string // http://127.0.0.1:port, for /healthz and /metrics
	WSURL   string // ws://127.0.0.1:port/ws
	NATSURL string // nats://127.0.0.1:port, the embedded NATS server
	Dir     string // temporary directory: JetStream data and hub.log

	stopOnce sync.Once
	stopErr  error
	client   *http.Client
}

// StartHub starts the hub binary at path on free loopback ports (or on the
// --listen address args give), with a fresh data directory, --dev,
// --log-level warn, --pong-wait 60s, --ping-interval 30s and no cap on
// unauthenticated connections; args come last, so they may override any
// of these.
// It returns once GET /healthz answers 200, waiting at most 30 s (less if
// ctx ends sooner). ctx bounds the start only: the process runs until Stop.
func StartHub(ctx context.Context, path string, args ...string) (*Hub, error) {
	h, err := LaunchHub(path, args...)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if err := h.waitHealthy(hctx); err != nil {
		tail := h.LogTail(4096)
		_ = h.Stop()
		return nil, fmt.Errorf("%w\nhub log tail:\n%s", err, tail)
	}
	return h, nil
}

// LaunchHub starts the hub binary as StartHub does, and returns at once,
// without waiting for it to be healthy (for start-up tests, which watch
// /livez and /readyz themselves).
func LaunchHub(path string, args ...string) (*Hub, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fleethub-load-")
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			listen = args[i+1] // a caller's address wins, as on the command line
		}
	}
	h := &Hub{
		HTTPURL: "http://" + listen,
		WSURL:   "ws://" + listen + "/ws",
		NATSURL: fmt.Sprintf("nats://127.0.0.1:%d", ports[1]),
		Dir:     dir,
		client:  &http.Client{Timeout: httpTimeout},
	}
	all := []string{
		"--listen", listen,
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--data-dir", filepath.Join(dir, "data"),
		"--dev",
		"--log-level", "warn",
		"--pong-wait", "60s",
		"--ping-interval", "30s",
		// Every simulated device connects from 127.0.0.1, thousands at
		// once: the per-IP and global caps on unauthenticated connections
		// are for the internet, not for this.
		"--max-unauthenticated", "0",
		"--max-unauthenticated-per-ip", "0",
	}
	h.child, err = startChild(path, append(all, args...), dir, filepath.Join(dir, "hub.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("loadtest: start hub: %w", err)
	}
	return h, nil
}

// freePorts returns n distinct free loopback ports: it holds n listeners on
// 127.0.0.1:0 at once, notes their ports and closes them. Another process
// could take a port in between; the hub then fails to start and says so.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("loadtest: pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitHealthy polls /healthz until it answers 200, the child exits or ctx
// ends.
func (h *Hub) waitHealthy(ctx context.Context) error {
	err := poll(ctx, 50*time.Millisecond, func() error {
		if exited, werr := h.Exited(); exited {
			return fmt.Errorf("%w before it was healthy: %v", errExited, werr)
		}
		code, err := h.healthCode(ctx)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/healthz answered %d", code)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("loadtest: hub not healthy: %w", err)
	}
	return nil
}

func (h *Hub) healthCode(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.HTTPURL+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Stop sends SIGTERM, waits for the child to exit, sends SIGKILL after 10 s,
// and removes the hub's directory. It returns the child's exit error (nil
// after a clean exit). Safe to call more than once.
func (h *Hub) Stop() error {
	h.stopOnce.Do(func() {
		h.stopErr = h.terminate(stopGrace)
		_ = os.RemoveAll(h.Dir)
	})
	return h.stopErr
}

// LogProblems returns the child's WARN and ERROR log lines, except the
// --dev warning every dev node logs at start; at most limit lines are
// returned, and total counts all of them. The log is read up to 64 MiB.
func (h *Hub) LogProblems(limit int) (lines []string, total int) {
	f, err := os.Open(h.LogPath)
	if err != nil {
		return []string{"(log unavailable: " + err.Error() + ")"}, 1
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "DEVELOPMENT MODE") {
			continue
		}
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) ||
			strings.Contains(line, "panic") {
			total++
			if len(lines) < limit {
				lines = append(lines, line)
			}
		}
	}
	return lines, total
}

// Health fetches /healthz and returns its JSON body.
func (h *Hub) Health(ctx context.Context) (map[string]any, error) {
	b, err := h.get(ctx, "/healthz")
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("loadtest: /healthz: %w", err)
	}
	return m, nil
}

// Metrics fetches /metrics and parses the Prometheus text format into one
// value per series, keyed as the series appears, e.g.
// `fleethub_sessions{role="device"}`.
func (h *Hub) Metrics(ctx context.Context) (Metrics, error) {
	b, err := h.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	return ParseMetrics(b), nil
}

func (h *Hub) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.HTTPURL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loadtest: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("loadtest: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("loadtest: GET %s: HTTP %d", path, resp.StatusCode)
	}
	return b, nil
}

// WaitSessions polls /metrics until fleethub_sessions{role="device"} is n,
// or ctx ends. It is how a test knows the hub has registered every device.
func (h *Hub) WaitSessions(ctx context.Context, n int) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := -1.0
	for {
		m, err := h.Metrics(ctx)
		if err == nil {
			last = m[`fleethub_sessions{role="device"}`]
			if last == float64(n) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("loadtest: hub holds %v device sessions, want %d: %w", last, n, ctx.Err())
		case <-h.done:
			return fmt.Errorf("loadtest: hub exited: %v", h.waitErr)
		case <-tick.C:
		}
	}
}

// Metrics is a parsed Prometheus text exposition: series to value.
type Metrics map[string]float64

// Sum adds every series of the metric name (with or without labels).
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// ParseMetrics parses the Prometheus text format loosely: comment lines are
// skipped, and each sample line is split at its last space (timestamps are
// not used by the hub's exposition).
func ParseMetrics(b []byte) Metrics {
	m := Metrics{}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			continue
		}
		m[string(line[:i])] = v
	}
	return m
}
