package node_test

import (
	"context"
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
