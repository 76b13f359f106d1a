package hub

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A burst of pushes to the same sessions goes out joined: fewer frames
// than pushes, every push delivered once, in order, and counted once each.
// A push with a where condition in the burst is delivered alone, in its
// place.
func TestBurstOfPushesJoined(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{})
	// More members than a small interest holds, so that the burst goes
	// through the shard's worker and its backlog.
	var fts []*fakeTransport
	for i := range smallSet + 2 {
		_, ft := attach(t, srv, 1<<20, device(fmt.Sprintf("J-%d", i), "dog", "g1"))
		fts = append(fts, ft)
	}
	pub := natstest.Connect(t, ns)
	const burst = 500
	sent := 0
	for round := 0; round < 5; round++ {
		for i := range burst {
			body := fmt.Sprintf(`{"service":"/x/burst","values":{"i":%d}}`, sent+i)
			if i == burst/2 {
				body = fmt.Sprintf(`{"service":"/x/burst","values":{"i":%d},"where":{"type":"dog"}}`, sent+i)
			}
			if err := pub.Publish(subjects.AllPush, []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		sent += burst
		natstest.Eventually(t, 30*time.Second, func() error {
			for _, ft := range fts {
				if n := ft.count(); n != sent {
					return fmt.Errorf("a session has %d of %d pushes", n, sent)
				}
			}
			return nil
		})
		if fts[0].sends.Load() < int64(sent) {
			break // some were joined
		}
	}
	if s := fts[0].sends.Load(); s >= int64(sent) {
		t.Fatalf("%d frames for %d pushes: none joined", s, sent)
	}
	for _, ft := range fts {
		ft.mu.Lock()
		for i, f := range ft.frames {
			var m struct {
				Values struct{ I int } `json:"values"`
			}
			if err := json.Unmarshal(f, &m); err != nil {
				t.Fatalf("message %d: %v: %s", i, err, f)
			}
			if m.Values.I != i {
				t.Fatalf("message %d carries push %d: out of order", i, m.Values.I)
			}
		}
		ft.mu.Unlock()
	}
	if got := testutil.ToFloat64(srv.metrics.pushesDelivered); got != float64(sent*len(fts)) {
		t.Fatalf("pushes delivered counted %v, want %d", got, sent*len(fts))
	}
	t.Logf("%d frames for %d pushes", fts[0].sends.Load(), sent)
}
