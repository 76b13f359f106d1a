package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/loadtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// launch starts a node process of bin that does not wait to be healthy.
func launch(t *testing.T, bin string, args ...string) *loadtest.Hub {
	t.Helper()
	h, err := loadtest.LaunchHub(bin, append([]string{"--master-secret", string(hubtest.MasterSecret)}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.Stop()
		if t.Failed() {
			t.Logf("node log:\n%s", h.LogTail(8192))
		}
	})
	return h
}

// TestStartUp runs the start-up cases on one build of the node, in
// parallel.
func TestStartUp(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nats-server and node processes; skipped with -short")
	}
	bin, err := loadtest.BuildHub(t.TempDir())
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	for name, f := range map[string]func(*testing.T, string){
		"BeforeNATS":             testStartBeforeNATS,
		"WaitingStopsOnSIGTERM":  testStartWaitingStopsOnSIGTERM,
		"NoJetStreamSIGTERM":     testStartNoJetStreamSIGTERM,
		"WithoutJetStreamQuorum": testStartWithoutJetStreamQuorum,
		"ReplicasOutOfRange":     testReplicasOutOfRange,
		"BadDataCentre":          testBadDataCentre,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, bin)
		})
	}
}

// waitProbe waits until GET path answers code, and returns the body.
func waitProbe(t *testing.T, h *loadtest.Hub, path string, code int, within time.Duration) map[string]any {
	t.Helper()
	var body map[string]any
	natstest.Eventually(t, within, func() error {
		if exited, err := h.Exited(); exited {
			t.Fatalf("node exited: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		got, b, err := h.Probe(ctx, path)
		if err != nil {
			return err
		}
		if got != code {
			return fmt.Errorf("GET %s: %d %v, want %d", path, got, b, code)
		}
		body = b
		return nil
	})
	return body
}

// missing is the "missing" list of a /readyz answer.
func missing(body map[string]any) []string {
	var out []string
	list, _ := body["missing"].([]any)
	for _, m := range list {
		out = append(out, fmt.Sprint(m))
	}
	return out
}

// testStartBeforeNATS: a node whose NATS is not there serves HTTP at once
// (/livez 200, /readyz 503 naming nats, /ws 503) instead of exiting; once a
// NATS server starts on its URL the node is ready within 15 s and serves
// a device.
func testStartBeforeNATS(t *testing.T, bin string) {
	port := natstest.RestartablePort(t)
	h := launch(t, bin, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port))
	waitProbe(t, h, "/livez", http.StatusOK, 15*time.Second)
	body := waitProbe(t, h, "/readyz", http.StatusServiceUnavailable, 5*time.Second)
	if m := missing(body); !slices.Contains(m, "nats") || !slices.Contains(m, "serving") {
		t.Fatalf("/readyz missing %v, want nats and serving", m)
	}
	waitProbe(t, h, "/ws", http.StatusServiceUnavailable, 5*time.Second)
	// Waiting, it keeps running.
	if exited, err := h.Exited(); exited {
		t.Fatalf("node exited while NATS was down: %v", err)
	}

	natstest.RunAt(t, port, t.TempDir())
	began := time.Now()
	waitProbe(t, h, "/readyz", http.StatusOK, 15*time.Second)
	t.Logf("ready %v after the NATS server started", time.Since(began).Round(time.Millisecond))
	c := hubtest.Dial(t, h.WSURL, nil)
	c.MustOK("/auth/device", hubtest.DeviceArgs("START-1", "retail"))
}

// testStartWaitingStopsOnSIGTERM: a node waiting for NATS exits 0 within
// a few seconds of SIGTERM.
func testStartWaitingStopsOnSIGTERM(t *testing.T, bin string) {
	h := launch(t, bin, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t)))
	waitProbe(t, h, "/livez", http.StatusOK, 15*time.Second)
	at := time.Now()
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !h.Wait(5 * time.Second) {
		t.Fatal("node waiting for NATS did not exit within 5 s of SIGTERM")
	}
	if _, err := h.Exited(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", err)
	}
	t.Logf("exited %v after SIGTERM", time.Since(at).Round(time.Millisecond))
}

// testStartNoJetStreamSIGTERM: a node connected to a NATS server without
// JetStream waits (/readyz 503 naming jetstream) and exits 0 within a few
// seconds of SIGTERM, its start cancelled.
func testStartNoJetStreamSIGTERM(t *testing.T, bin string) {
	port := natstest.FreePort(t)
	ns := natstest.StartProc(t, port, fmt.Sprintf("listen: 127.0.0.1:%d\n", port))
	h := launch(t, bin, "--nats-url", ns.URL())
	natstest.Eventually(t, 15*time.Second, func() error {
		body := waitProbe(t, h, "/readyz", http.StatusServiceUnavailable, 5*time.Second)
		if m := missing(body); !slices.Contains(m, "jetstream") || slices.Contains(m, "nats") {
			return fmt.Errorf("/readyz missing %v, want jetstream and not nats", m)
		}
		return nil
	})
	at := time.Now()
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !h.Wait(5 * time.Second) {
		t.Fatal("node waiting for JetStream did not exit within 5 s of SIGTERM")
	}
	if _, err := h.Exited(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", err)
	}
	t.Logf("exited %v after SIGTERM", time.Since(at).Round(time.Millisecond))
}

// testStartWithoutJetStreamQuorum: a node started on a cluster of three
// whose JetStream has no quorum (one server up) waits, /readyz 503 naming
// jetstream, and comes up once the other two servers are back.
func testStartWithoutJetStreamQuorum(t *testing.T, bin string) {
	c := natstest.StartCluster(t, natstest.ClusterOptions{Name: "quorum"})
	c.Servers[1].Stop()
	c.Servers[2].Stop()
	h := launch(t, bin, "--nats-url", c.Servers[0].URL(), "--replicas", "3")
	body := waitProbe(t, h, "/readyz", http.StatusServiceUnavailable, 15*time.Second)
	natstest.Eventually(t, 15*time.Second, func() error {
		if m := missing(body); !slices.Contains(m, "jetstream") {
			body = waitProbe(t, h, "/readyz", http.StatusServiceUnavailable, 5*time.Second)
			return fmt.Errorf("/readyz missing %v, want jetstream", m)
		}
		return nil
	})
	waitProbe(t, h, "/ws", http.StatusServiceUnavailable, 5*time.Second)

	c.Servers[1].Restart(t)
	c.Servers[2].Restart(t)
	began := time.Now()
	waitProbe(t, h, "/readyz", http.StatusOK, 30*time.Second)
	t.Logf("ready %v after the other two servers restarted", time.Since(began).Round(time.Millisecond))
	dev := hubtest.Dial(t, h.WSURL, nil)
	dev.MustOK("/auth/device", hubtest.DeviceArgs("QUORUM-1", "retail"))
}

// testBadDataCentre: a --dc or --js-domain that is not a subject token
// exits 2 with one line naming the flag.
func testBadDataCentre(t *testing.T, bin string) {
	for _, args := range [][]string{{"--dc", "east.1"}, {"--dc", "a b"}, {"--js-domain", "west.*"}} {
		code, out := hubExit(t, bin, append([]string{"--dev", "--nats-url", "nats://127.0.0.1:1"}, args...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], args[0]) {
			t.Fatalf("%q: exit %d, %q; want 2 and one line naming %s", args, code, out, args[0])
		}
	}
}

// testReplicasOutOfRange: --replicas outside 1..5 exits 2 with one line.
func testReplicasOutOfRange(t *testing.T, bin string) {
	for _, r := range []string{"0", "6", "-1"} {
		code, out := hubExit(t, bin, "--dev", "--replicas", r, "--nats-url", "nats://127.0.0.1:1")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "--replicas") {
			t.Fatalf("--replicas %s: exit %d, %q; want 2 and one line naming --replicas", r, code, out)
		}
	}
}
