package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNodeLostGraceCountsFromFoundLost kills a node abruptly (its NATS
// connection and its devices' sockets end at once): the grace of its
// devices counts from when the survivors find it lost, its liveness entry
// expiring, not from its last refresh. A device that comes back on the
// other node within that grace gets no record; one that does not comes
// back gets node_lost no earlier than found lost + grace.
func TestNodeLostGraceCountsFromFoundLost(t *testing.T) {
	t.Parallel()
	const (
		nodeTTL = time.Second
		grace   = 2 * time.Second
		// When the returning device dials: after found lost + grace -
		// node TTL (when the grace counted from the last refresh ends),
		// well before found lost + grace.
		backAfter = grace - nodeTTL + 200*time.Millisecond
		// How early a record may seem: the test sees the expiry a moment
		// after the node does.
		early = 100 * time.Millisecond
	)
	a, b, nc := twoNodes(t, func(h *hub.Config, _ *nodeConfig) {
		h.NodeTTL, h.OfflineGrace, h.PresenceTTL = nodeTTL, grace, 10*time.Second
	})
	rec := record(t, nc)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := js.KeyValue(ctx, hub.BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	w, err := nodes.Watch(ctx, "node-b", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	foundLost := make(chan time.Time, 1)
	go func() {
		for e := range w.Updates() {
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				foundLost <- time.Now()
				return
			}
		}
	}()

	back := hubtest.Device(t, b, "NL-back", "retail")
	stay := hubtest.Device(t, b, "NL-stay", "retail")
	rec.wait(t, "NL-back", 1, 5*time.Second)
	rec.wait(t, "NL-stay", 1, 5*time.Second)

	killedAt := time.Now()
	b.NC.Close()
	_ = back.Conn.Close()
	_ = stay.Conn.Close()
	var lostAt time.Time
	select {
	case lostAt = <-foundLost:
	case <-ctx.Done():
		t.Fatal("node-b's liveness entry never went")
	}
	t.Logf("node-b found lost %v after it was killed", lostAt.Sub(killedAt).Round(time.Millisecond))

	// The device's socket broke with its node; it reconnects elsewhere
	// within its grace.
	time.Sleep(time.Until(lostAt.Add(backAfter)))
	again := hubtest.Device(t, a, "NL-back", "retail")

	off, at := rec.wait(t, "NL-stay", 2, 4*grace)
	if off.Online || off.Reason != hub.ReasonNodeLost || off.Node != "node-b" {
		t.Fatalf("record %+v, want node_lost from node-b", off)
	}
	d := at.Sub(lostAt)
	t.Logf("node_lost %v after found lost (grace %v)", d.Round(time.Millisecond), grace)
	if d < grace-early {
		t.Fatalf("node_lost %v after the node was found lost, before the grace of %v", d, grace)
	}
	if d > grace+5*time.Second { // generous: a loaded box delays timers, not the rule
		t.Fatalf("node_lost %v after the node was found lost, want about the grace of %v", d, grace)
	}
	// Whatever the coordinator reports about node-b's devices, it reports
	// in one pass: NL-back's record would have come with NL-stay's.
	again.MustOK("/ping", nil)
	time.Sleep(300 * time.Millisecond)
	if recs := rec.of("NL-back"); len(recs) != 1 {
		t.Fatalf("records of the device that came back: %+v, want only its first connected", recs)
	}
}
