//go:build load

package multidc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestAggregateSourcesAndDirectMirror answers question c: per-DC buckets
// aggregated under the §6 name by Sources, a MirrorDirect mirror in the
// other DC answering direct gets of the §6 name locally, how deletes and
// expiries travel, and what a cut does to the views.
func TestAggregateSourcesAndDirectMirror(t *testing.T) {
	two := twoDCs(t)
	ctx := timeout(t, 90*time.Second)

	local := func(js jetstream.JetStream, bucket, dc string, ttl time.Duration) jetstream.KeyValue {
		t.Helper()
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, TTL: ttl, LimitMarkerTTL: time.Minute, Placement: &jetstream.Placement{Cluster: dc}})
		if err != nil {
			t.Fatalf("%s: %v", bucket, err)
		}
		return kv
	}
	srcE := local(two.jsE, "hub_presence_east", "east", 0)
	srcW := local(two.jsW, "hub_presence_west", "west", 0)
	nodesW := local(two.jsW, "hub_nodes_west", "west", 2*time.Second)
	local(two.jsE, "hub_nodes_east", "east", 2*time.Second)

	aggregate := func(name string, limitMarker time.Duration) {
		t.Helper()
		_, err := two.jsE.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, LimitMarkerTTL: limitMarker, Placement: &jetstream.Placement{Cluster: "east"},
			Sources: []*jetstream.StreamSource{{Name: name + "_east"}, {Name: name + "_west"}},
		})
		if err != nil {
			t.Fatalf("aggregate %s: %v", name, err)
		}
	}
	aggregate("hub_presence", time.Minute)
	aggregate("hub_nodes", 0) // no TTL of its own: only markers can remove keys
	viewE, err := two.jsE.KeyValue(ctx, "hub_presence")
	if err != nil {
		t.Fatal(err)
	}
	viewW, err := two.jsW.KeyValue(ctx, "hub_presence")
	if err != nil {
		t.Fatal(err)
	}
	nodesViewE, err := two.jsE.KeyValue(ctx, "hub_nodes")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := srcW.Put(ctx, "w1", []byte("west device")); err != nil {
		t.Fatal(err)
	}
	if _, err := srcE.Put(ctx, "e1", []byte("east device")); err != nil {
		t.Fatal(err)
	}
	found := func(kv jetstream.KeyValue, key string) func() error {
		return func() error {
			_, err := kv.Get(timeout(t, 2*time.Second), key)
			return err
		}
	}
	gone := func(kv jetstream.KeyValue, key string) func() error {
		return func() error {
			_, err := kv.Get(timeout(t, 2*time.Second), key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			if err == nil {
				return errNotYet
			}
			return err
		}
	}
	waitFor(t, 10*time.Second, found(viewE, "w1"))
	p50, worst, err := timed(20, func(int) error { return found(viewW, "w1")() })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("west client get of hub_presence (aggregate in east, no mirror): p50 %.1f ms max %.1f ms", ms(p50), ms(worst))

	// The mirror in west that answers direct gets of hub_presence.
	if _, err := two.jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		// A mirror may not set LimitMarkerTTL (the server refuses
		// "subject delete markers forbidden on mirrors"): it copies the
		// origin's markers as they are.
		Bucket:    "hub_presence_view_west",
		Placement: &jetstream.Placement{Cluster: "west"}, Mirror: &jetstream.StreamSource{Name: "hub_presence"},
	}); err != nil {
		t.Fatalf("mirror: %v", err)
	}
	mirror, err := two.jsW.Stream(ctx, "KV_hub_presence_view_west")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mirror config: mirror_direct=%v allow_msg_ttl=%v", mirror.CachedInfo().Config.MirrorDirect, mirror.CachedInfo().Config.AllowMsgTTL)
	waitFor(t, 10*time.Second, func() error {
		info, err := mirror.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs < 2 {
			return errNotYet
		}
		return nil
	})
	p50, worst, err = timed(20, func(int) error { return found(viewW, "w1")() })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("west client get of hub_presence with a MirrorDirect mirror in west: p50 %.1f ms max %.1f ms", ms(p50), ms(worst))
	if p50 > wanDelay {
		t.Errorf("direct get through the local mirror took %v (a WAN round trip)", p50)
	}

	// Propagation of a put, a delete and expiries from a west source.
	if _, err := srcW.Put(ctx, "w2", []byte("v")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	waitFor(t, 10*time.Second, found(viewE, "w2"))
	dEast := time.Since(t0)
	waitFor(t, 10*time.Second, found(viewW, "w2"))
	t.Logf("put in hub_presence_west: in the aggregate (east) after %.1f ms, in the west mirror after %.1f ms", ms(dEast), ms(time.Since(t0)))
	if err := srcW.Delete(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitFor(t, 10*time.Second, gone(viewE, "w2"))
	waitFor(t, 10*time.Second, gone(viewW, "w2"))
	t.Logf("delete in hub_presence_west: gone from aggregate and west mirror after %.1f ms", ms(time.Since(t0)))

	if _, err := srcW.Create(ctx, "ttl1", []byte("v"), jetstream.KeyTTL(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitFor(t, 10*time.Second, found(viewE, "ttl1"))
	waitFor(t, 10*time.Second, gone(srcW, "ttl1"))
	dSrc := time.Since(t0)
	waitFor(t, 10*time.Second, gone(viewE, "ttl1"))
	dAgg := time.Since(t0)
	waitFor(t, 10*time.Second, gone(viewW, "ttl1"))
	t.Logf("per-key TTL 2s in hub_presence_west: gone from source after %.0f ms, aggregate %.0f ms, west mirror %.0f ms", ms(dSrc), ms(dAgg), ms(time.Since(t0)))

	if _, err := nodesW.Put(ctx, "node-w", []byte("v")); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitFor(t, 10*time.Second, found(nodesViewE, "node-w"))
	waitFor(t, 10*time.Second, gone(nodesW, "node-w"))
	dSrc = time.Since(t0)
	_, err = attempt(t, 10*time.Second, func(ctx context.Context) error {
		for ctx.Err() == nil {
			if gone(nodesViewE, "node-w")() == nil {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return ctx.Err()
	})
	t.Logf("bucket TTL (MaxAge 2s) with LimitMarkerTTL in hub_nodes_west: gone from source after %.0f ms; aggregate without TTL: %s after %.0f ms", ms(dSrc), map[bool]string{true: "removed by the sourced marker", false: "NOT removed"}[err == nil], ms(time.Since(t0)))
	if err != nil {
		t.Errorf("a MaxAge expiry in a source did not reach the aggregate: %v", err)
	}

	// A cut: each side keeps its own source; the aggregate (east) and the
	// west mirror go stale for the other side, and converge after heal.
	two.sc.Cut()
	cutAt := time.Now()
	for i := range 50 {
		if _, err := srcW.Put(ctx, fmt.Sprintf("cutw%d", i), []byte("v")); err != nil {
			t.Fatalf("west put during cut: %v", err)
		}
		if _, err := srcE.Put(ctx, fmt.Sprintf("cute%d", i), []byte("v")); err != nil {
			t.Fatalf("east put during cut: %v", err)
		}
	}
	d, err := attempt(t, 2*time.Second, func(ctx context.Context) error { _, err := viewW.Get(ctx, "w1"); return err })
	t.Logf("cut: west get of hub_presence (only the west mirror can answer): %s in %.1f ms", errText(err), ms(d))
	if err != nil {
		t.Errorf("the west mirror did not answer during the cut: %v", err)
	}
	// A listing of the §6 name in west during the cut: a direct get batch
	// is answered by the MirrorDirect mirror like a single get.
	var n int
	d, err = attempt(t, 2*time.Second, func(ctx context.Context) error {
		var err error
		n, err = lastPerKey(ctx, two.jsW.Conn(), "KV_hub_presence", "$KV.hub_presence.>")
		return err
	})
	t.Logf("cut: west direct get batch (multi_last) of KV_hub_presence: %s, %d keys in %.1f ms", errText(err), n, ms(d))
	if err != nil {
		t.Errorf("listing through the west mirror during the cut: %v", err)
	}
	// 1+1 servers: neither side holds a meta quorum during the cut.
	for dc, kv := range map[string]jetstream.KeyValue{"east": srcE, "west": srcW} {
		d, err := attempt(t, 3*time.Second, func(ctx context.Context) error { return watchOnce(ctx, kv) })
		t.Logf("cut, 1+1 meta peers: %s starts a watch on its own bucket: %s in %.0f ms", dc, errText(err), ms(d))
	}
	_, err = viewW.Get(timeout(t, 2*time.Second), "cutw0")
	t.Logf("cut: west's own new device cutw0 in the hub_presence view in west: %s", errText(err))
	waitFor(t, 60*time.Second, func() error {
		// Hold the cut a few seconds: long enough for the gateway and
		// source consumers to notice, bounded by a condition.
		if time.Since(cutAt) < 5*time.Second {
			return errNotYet
		}
		return nil
	})
	two.sc.Heal()
	t0 = time.Now()
	waitFor(t, 60*time.Second, found(viewE, "cutw49"))
	dAgg = time.Since(t0)
	waitFor(t, 60*time.Second, found(viewW, "cute49"))
	dMir := time.Since(t0)
	waitFor(t, 60*time.Second, found(viewW, "cutw49"))
	t.Logf("heal after %.1f s of cut: aggregate has west's 50 keys after %.0f ms; west mirror has east's after %.0f ms, its own after %.0f ms", time.Since(cutAt).Seconds()-time.Since(t0).Seconds(), ms(dAgg), ms(dMir), ms(time.Since(t0)))
}
