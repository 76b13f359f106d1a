package node_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/node"
	"github.com/gorilla/websocket"
)

// A device that floods requests as fast as its socket takes them is slowed
// at the socket and, still over its limit after RateLimitClose, closed with
// 1008; the other sessions of its node are unaffected.
func TestBadInputRequestFlood(t *testing.T) {
	t.Parallel()
	e := biStart(t, func(hc *hub.Config, _ *node.Config) { hc.RateLimitClose = time.Second })
	w := e.witness(t)
	flooder := hubtest.Device(t, e.n, biUnique("FLOOD"), "dog")
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		frame := []byte(`{"op":"request","service":"/ping","request_id":"f"}` + "\n" + `{"op":"request","service":"/ping"}`)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			_ = flooder.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := flooder.Conn.WriteMessage(websocket.TextMessage, frame); err != nil {
				return // closed by the node
			}
			sent.Add(1)
		}
	}()
	if code := flooder.Closed(20 * time.Second); code != wire.ClosePolicy {
		t.Fatalf("flooder closed with %d, want %d", code, wire.ClosePolicy)
	}
	<-done
	e.probe(t, w)
	t.Logf("%d frames written before the close", sent.Load())
}
