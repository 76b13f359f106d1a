package hub

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// connectDevices connects n devices sn-0... to srv's presence, side by
// side.
func connectDevices(t testing.TB, srv *Server, prefix string, n int) []*Session {
	t.Helper()
	sessions := make([]*Session, n)
	for i := range n {
		sessions[i], _ = attach(t, srv, 100, device(fmt.Sprintf("%s-%d", prefix, i), "dog", "g1"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	next := make(chan *Session)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				if err := srv.presence.connected(ctx, s); err != nil {
					t.Errorf("connect %s: %v", s.Identity().SN, err)
				}
			}
		}()
	}
	for _, s := range sessions {
		next <- s
	}
	close(next)
	wg.Wait()
	return sessions
}

// A node's bus traffic follows its own devices, not the fleet's: while
// another node connects 2,000 devices and refreshes each entry, the
// node with no device of its own receives next to nothing (its own
// liveness writes' acknowledgements and the other node's liveness
// entries), where it used to receive every entry write and every record.
// (The directory node follows the records: that is the busy node here.)
func TestPresenceTrafficIgnoresOtherNodes(t *testing.T) {
	t.Parallel()
	const devices = 2000
	ns := natstest.Run(t)
	cfg := Config{PresenceTTL: 2 * time.Second}
	// The busy node starts first and so holds the directory lease, which
	// follows the fleet's presence records by design; the quiet node is
	// a plain node.
	busy := startNodeServer(t, natstest.Connect(t, ns), "node-b", cfg)
	quiet := natstest.Connect(t, ns)
	a := startNodeServer(t, quiet, "node-a", cfg)
	a.dir.mu.Lock()
	isDir := a.dir.idx != nil
	a.dir.mu.Unlock()
	if isDir {
		t.Fatal("node-a holds the directory")
	}

	before, start := quiet.Stats().InMsgs, time.Now()
	connectDevices(t, busy, "TR", devices)
	// Every entry refreshed at least once (a refresh falls due within the
	// first interval, which is under the TTL).
	natstest.Eventually(t, 30*time.Second, func() error {
		if n := testutil.ToFloat64(busy.metrics.presenceWrites); n < devices {
			return fmt.Errorf("%v of %d entries refreshed", n, devices)
		}
		return nil
	})
	got := quiet.Stats().InMsgs - before
	elapsed := time.Since(start)
	t.Logf("node-a received %d messages in %v while node-b connected and refreshed %d devices", got, elapsed.Round(time.Millisecond), devices)
	// What a node receives anyway (liveness, store checks) comes at a few
	// messages a second; each device would have cost at least three.
	if allowed := uint64(devices/10 + 10*int(elapsed.Seconds())); got > allowed {
		t.Fatalf("node-a received %d messages while node-b connected and refreshed %d devices: it follows them", got, devices)
	}
}
