//go:build load

package multidc

import (
	"errors"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestAggregateTTLDuringCut asks whether the other DC's entries vanish
// from an aggregate during a cut although their own DC keeps refreshing
// them (a false offline or node_lost for anyone reading the aggregate).
// The source keeps a key alive with per-key TTL refreshes; one aggregate
// allows message TTLs (LimitMarkerTTL), one does not.
func TestAggregateTTLDuringCut(t *testing.T) {
	two := twoDCs(t)
	ctx := timeout(t, 90*time.Second)
	_, err := two.jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_nodes_west", LimitMarkerTTL: time.Minute, Placement: &jetstream.Placement{Cluster: "west"}})
	if err != nil {
		t.Fatal(err)
	}
	aggs := map[string]jetstream.KeyValue{}
	for name, marker := range map[string]time.Duration{"hub_nodes_ttl": time.Minute, "hub_nodes_plain": 0} {
		kv, err := two.jsE.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, LimitMarkerTTL: marker, Placement: &jetstream.Placement{Cluster: "east"},
			Sources: []*jetstream.StreamSource{{Name: "hub_nodes_west"}}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		aggs[name] = kv
	}
	const ttl = 2 * time.Second
	refresh := func() {
		t.Helper()
		// KeyValue.Put takes no TTL: a refresh with a per-key TTL is a
		// publish with Nats-TTL on the key's subject.
		if _, err := two.jsW.Publish(ctx, "$KV.hub_nodes_west.node-w", []byte("alive"), jetstream.WithMsgTTL(ttl)); err != nil {
			t.Fatal(err)
		}
	}
	refresh()
	for name, kv := range aggs {
		d := waitFor(t, 10*time.Second, func() error { _, err := kv.Get(ctx, "node-w"); return err })
		t.Logf("%s has the west node after %.0f ms", name, ms(d))
	}

	two.sc.Cut()
	cutAt := time.Now()
	gone := map[string]time.Duration{}
	for time.Since(cutAt) < 3*ttl {
		refresh() // west keeps its node alive, in its own DC
		for name, kv := range aggs {
			if _, ok := gone[name]; ok {
				continue
			}
			if _, err := kv.Get(ctx, "node-w"); errors.Is(err, jetstream.ErrKeyNotFound) {
				gone[name] = time.Since(cutAt)
			}
		}
		time.Sleep(200 * time.Millisecond) // the refresh period
	}
	for name := range aggs {
		if d, ok := gone[name]; ok {
			t.Logf("cut: %s lost the west node %.1f s into the cut (its own expiry of the sourced TTL)", name, d.Seconds())
		} else {
			t.Logf("cut: %s kept the west node for the whole %v cut", name, 3*ttl)
		}
	}
	if _, ok := gone["hub_nodes_plain"]; ok {
		t.Errorf("an aggregate without message TTLs expired a sourced entry")
	}
	two.sc.Heal()
	// After heal: the plain aggregate follows the source's expiry
	// through its marker once the source stops refreshing.
	natstest.WaitReachable(t, two.eastURL, two.westURL, 60*time.Second, app)
	healAt := time.Now()
	back := map[string]time.Duration{}
	for len(back) < len(aggs) && time.Since(healAt) < 90*time.Second {
		refresh()
		for name, kv := range aggs {
			if _, ok := back[name]; !ok {
				if _, err := kv.Get(ctx, "node-w"); err == nil {
					back[name] = time.Since(healAt)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name := range aggs {
		d, ok := back[name]
		if !ok {
			t.Fatalf("heal: %s never had the west node again", name)
		}
		t.Logf("heal: %s has the west node again %.1f s after heal (refreshing)", name, d.Seconds())
	}
	t0 := time.Now()
	for name, kv := range aggs {
		waitFor(t, 30*time.Second, func() error {
			if _, err := kv.Get(ctx, "node-w"); errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			return errNotYet
		})
		t.Logf("after the last refresh, %s lost the west node %.1f s later (source TTL %v)", name, time.Since(t0).Seconds(), ttl)
	}
}
