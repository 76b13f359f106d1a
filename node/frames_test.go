package node_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/gorilla/websocket"
)

// BenchmarkRequestRoundTrip measures one /ping request and its answer
// from an authenticated device over a real loopback WebSocket: the
// inbound frame path (read goroutine, hand-over to a frame worker,
// decode, answer, write).
func BenchmarkRequestRoundTrip(b *testing.B) {
	ns := natstest.Run(b)
	tn := hubtest.StartNode(b, ns, "rt", func(hc *hub.Config, nc *node.Config) {
		hc.MessageRate, hc.MessageBurst = 1e9, 1e6
	})
	addr := tn.Serve(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	auth := hubtest.RequestFrame("/auth/device", "a", hubtest.DeviceArgs("RT-1", "bench"))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(auth)); err != nil {
		b.Fatal(err)
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		b.Fatal(err)
	}
	ping := []byte(hubtest.RequestFrame("/ping", "p", nil))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := ws.WriteMessage(websocket.TextMessage, ping); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFrameWorkersStopWithNode: the workers that handled the frames of
// many sessions at once, and the pinger, are gone once the node has shut
// down.
func TestFrameWorkersStopWithNode(t *testing.T) {
	ns := natstest.Run(t)
	tn := hubtest.StartNode(t, ns, "fw", idleOpts)
	// The httptest server: the test shuts the node down itself.
	addr := strings.TrimPrefix(tn.Server.URL, "http://")
	// Many auth requests at once: several workers.
	conns := connectIdle(t, addr, "fw", 64, 16)
	if n := countStacks("node.(*frameWorkers).work"); n == 0 {
		t.Fatal("no frame worker running after 64 connects")
	}
	if n := countStacks("node.(*pinger).run"); n != 1 {
		t.Fatalf("%d pingers running, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tn.Node.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, c := range conns {
		_ = c.Close()
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if n := countStacks("node.(*frameWorkers).work"); n != 0 {
			return fmt.Errorf("%d frame workers still running after shutdown", n)
		}
		if n := countStacks("node.(*pinger).run"); n != 0 {
			return fmt.Errorf("the pinger still runs after shutdown")
		}
		return nil
	})
}

// countStacks counts the goroutines with fn in their stack.
func countStacks(fn string) int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
