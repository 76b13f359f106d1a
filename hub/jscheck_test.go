package hub

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/fleethub/fleethub/internal/natstest"
)

// TestJetStreamCheck: a failing Config.JetStreamCheck (the embedded
// server's JetStream without quorum) makes the node not ready at once,
// naming JetStream, and a passing one ready again.
func TestJetStreamCheck(t *testing.T) {
	var down atomic.Bool
	ns := natstest.Run(t)
	srv := startTestServer(t, natstest.Connect(t, ns), Config{JetStreamCheck: func() error {
		if down.Load() {
			return errors.New("no quorum")
		}
		return nil
	}})
	if h := srv.Health(); !h.Ready() {
		t.Fatalf("health %+v with the check passing, want ready", h)
	}
	down.Store(true)
	if h := srv.Health(); h.Ready() || h.JetStream || !h.Connected || !h.Serving {
		t.Fatalf("health %+v with the check failing, want connected and serving but JetStream down", h)
	}
	down.Store(false)
	if h := srv.Health(); !h.Ready() {
		t.Fatalf("health %+v with the check passing again, want ready", h)
	}
}
