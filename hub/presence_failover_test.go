package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestNoNodeLostWhileLivenessUnwritable is what a leader election of
// hub_nodes does to node liveness: for a while no node can write its
// entry (here each node's liveness writes are lost on their way, for
// several times the node TTL plus the grace), the entries expire, and
// each node sees the other go. Neither node's devices may be reported
// offline: a node whose own liveness writes fail does not judge others,
// and once they succeed again the other's entry is back. Before, each
// node reported the other's device offline with node_lost at the end of
// the grace.
func TestNoNodeLostWhileLivenessUnwritable(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	cfg := Config{NodeTTL: time.Second, OfflineGrace: time.Second}
	var srvs []*Server
	var pxs []*natsProxy
	for _, id := range []string{"fa", "fb"} {
		px := newNATSProxy(t, ns.Addr().String())
		nc, err := nats.Connect(px.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		srvs, pxs = append(srvs, startNodeServer(t, nc, id, cfg)), append(pxs, px)
	}
	connectDevice(t, srvs[0], "FO-A", "robot", "default")
	connectDevice(t, srvs[1], "FO-B", "robot", "default")
	js, _ := jetstream.New(natstest.Connect(t, ns))
	nodes, err := js.KeyValue(context.Background(), BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	// live reports which of the two nodes' liveness entries are there.
	live := func() (a, b bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, errA := nodes.Get(ctx, "fa")
		_, errB := nodes.Get(ctx, "fb")
		return errA == nil, errB == nil
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if a, b := live(); !a || !b {
			return fmt.Errorf("liveness entries: fa %v, fb %v", a, b)
		}
		return nil
	})

	// About 12 liveness writes of each node are lost: 4 s or more, with
	// writes every third of the 1 s TTL, each waiting its third for an
	// answer.
	for _, px := range pxs {
		px.dropPublishes("$KV.hub_nodes.", 12)
	}
	natstest.Eventually(t, 20*time.Second, func() error {
		if a, b := live(); a || b {
			return fmt.Errorf("liveness entries not expired yet: fa %v, fb %v", a, b)
		}
		return nil
	})
	natstest.Eventually(t, 30*time.Second, func() error {
		if a, b := live(); !a || !b {
			return fmt.Errorf("liveness entries not back yet: fa %v, fb %v", a, b)
		}
		return nil
	})
	unsure := testutil.ToFloat64(srvs[0].metrics.presenceRetries.WithLabelValues("node_lost_unsure")) +
		testutil.ToFloat64(srvs[1].metrics.presenceRetries.WithLabelValues("node_lost_unsure"))
	if unsure == 0 {
		t.Fatal("no loss was left unsure: the liveness writes did not fail long enough to test anything")
	}
	// A node_lost would come within a grace and a TTL of the nodes seeing
	// each other again, at the latest: watch that long.
	end := time.Now().Add(3 * (cfg.NodeTTL + cfg.OfflineGrace))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, sn := range []string{"FO-A", "FO-B"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			recs, err := history(ctx, js, sn)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 1 || !recs[0].Online {
				t.Fatalf("%s: presence history %+v, want one connected record", sn, recs)
			}
		}
		if time.Now().After(end) {
			return
		}
		<-tick.C
	}
}
