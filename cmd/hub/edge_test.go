package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/node"
)

// captureStderr runs f with os.Stderr going to a pipe and returns what f
// wrote there. Tests using it must not run in parallel.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	saved := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = saved; _ = w.Close() }() // also on Goexit: the reader then ends
	f()
	w.Close()
	b := <-out
	r.Close()
	return b
}

// --dev on a --listen address that is not loopback refuses to start: exit
// 2 and one line naming --allow-dev-on-network, before anything is
// opened. The addresses are ones this machine cannot listen on (TEST-NET,
// the documentation prefix, a name that never resolves) and the embedded
// NATS server would take a free port, so even a regression opens nothing
// on a network; 0.0.0.0, :: and the empty host are covered through
// checkDevListen below.
func TestDevOnNetworkRefused(t *testing.T) {
	for _, listen := range []string{"192.0.2.1:8080", "[2001:db8::1]:8080", "hub.invalid:8080"} {
		var code int
		out := captureStderr(t, func() {
			code = run([]string{"--dev", "--listen", listen, "--nats-listen", "127.0.0.1:-1", "--data-dir", t.TempDir()})
		})
		if code != 2 {
			t.Errorf("--dev --listen %s: exit %d, want 2", listen, code)
		}
		if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != 1 || !strings.Contains(out, "--allow-dev-on-network") {
			t.Errorf("--dev --listen %s: stderr %q, want one line naming --allow-dev-on-network", listen, out)
		}
	}
	// The environment counts as the flag does.
	t.Setenv("HUB_LISTEN", "192.0.2.1:8080")
	if code := run([]string{"--dev", "--nats-listen", "127.0.0.1:-1", "--data-dir", t.TempDir()}); code != 2 {
		t.Errorf("--dev with HUB_LISTEN=192.0.2.1:8080: exit %d, want 2", code)
	}
}

// checkDevListen passes loopback addresses silently, and a network
// address under --allow-dev-on-network with a loud warning. (The tests
// listen on loopback only, so the allowed case is not started for real.)
func TestCheckDevListen(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for _, listen := range []string{"127.0.0.1:8080", "127.0.0.2:0", "localhost:8080", "[::1]:8080"} {
		if err := checkDevListen(true, listen, false, log); err != nil {
			t.Errorf("--dev --listen %s refused: %v", listen, err)
		}
	}
	for _, listen := range []string{"0.0.0.0:8080", "[::]:8080", ":8080", "10.1.2.3:8080", "example.com:8080", "localhost.example.com:8080"} {
		err := checkDevListen(true, listen, false, log)
		if err == nil || !strings.Contains(err.Error(), "--allow-dev-on-network") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--dev --listen %s: %v, want a refusal naming --allow-dev-on-network", listen, err)
		}
	}
	if err := checkDevListen(false, "0.0.0.0:8080", false, log); err != nil {
		t.Errorf("no --dev, --listen 0.0.0.0:8080 refused: %v", err)
	}
	if buf.Len() != 0 {
		t.Errorf("warnings without --allow-dev-on-network: %s", buf.String())
	}
	if err := checkDevListen(true, "0.0.0.0:8080", true, log); err != nil {
		t.Fatalf("--allow-dev-on-network refused: %v", err)
	}
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "--allow-dev-on-network") || !strings.Contains(out, "0.0.0.0:8080") {
		t.Fatalf("warning %q, want a WARN naming the address and --allow-dev-on-network", out)
	}
}

// The edge flags reach node.Config, 0 meaning no limit.
func TestEdgeOptionsApply(t *testing.T) {
	t.Parallel()
	var c node.Config
	edgeOptions{readTimeout: 3 * time.Second, idleTimeout: time.Minute, maxUnauth: 7, maxUnauthPerIP: 2}.apply(&c)
	if c.ReadTimeout != 3*time.Second || c.IdleTimeout != time.Minute || c.MaxUnauthenticated != 7 || c.MaxUnauthenticatedPerIP != 2 {
		t.Fatalf("applied %+v", c)
	}
	c = node.Config{}
	edgeOptions{}.apply(&c)
	if c.ReadTimeout >= 0 || c.IdleTimeout >= 0 || c.MaxUnauthenticated >= 0 || c.MaxUnauthenticatedPerIP >= 0 {
		t.Fatalf("0 flags did not turn the limits off: %+v", c)
	}
}
