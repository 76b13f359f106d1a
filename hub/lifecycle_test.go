package hub

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// hubGoroutines counts the goroutines running code of this package.
func hubGoroutines() int {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "fleethub/hub.") && !strings.Contains(g, "hub.hubGoroutines") && !strings.Contains(g, "testing.tRunner") {
			n++
		}
	}
	return n
}

// A Start that fails late (after dispatch, watchers and presence upkeep
// have started) stops and waits for all of them. Not parallel: it counts
// the package's goroutines.
func TestFailedStartLeavesNothingRunning(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A stream that takes the status subjects: HUB_STATUS cannot be made,
	// one of the last steps of Start.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"hub.dev.*.status"}}); err != nil {
		t.Fatal(err)
	}
	before := hubGoroutines()
	srv, err := New(Config{Conn: nc, NodeID: "t", MasterSecret: []byte("0123456789abcdef0123"), BcryptCost: 4, AdminPassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err == nil || !strings.Contains(err.Error(), StreamStatus) {
		t.Fatalf("Start = %v, want an error about %s", err, StreamStatus)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := hubGoroutines(); n > before {
			return fmt.Errorf("%d goroutines of the hub still running after a failed Start (%d before)", n, before)
		}
		return nil
	})
	if srv.goTask(func() {}) {
		t.Fatal("a failed Start still takes tasks")
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after a failed Start: %v", err)
	}
}

// Once Shutdown has begun no new task starts, and a request that needs one
// gets a 503.
func TestNoTaskAfterShutdown(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	s, _ := attach(t, srv, 100, admin("a", "*"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ran := false
	if srv.goTask(func() { ran = true }) || ran {
		t.Fatal("goTask ran work after Shutdown")
	}
	_, werr := srv.runAsync(s, request("/x", `{}`), func(context.Context) (any, *wire.Error) { return nil, nil })
	if werr == nil || werr.Code != wire.CodeUnavailable {
		t.Fatalf("runAsync after Shutdown = %v, want 503", werr)
	}
}
