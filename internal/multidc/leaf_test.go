//go:build load

package multidc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLeafSiteOwnDomain answers question f: an edge site on a leaf node
// with its own JetStream domain keeps the hub's state (same bucket names
// as central, no conflict), central reads it through the domain, an
// aggregate in central sources it, and a cut leaves the site working.
func TestLeafSiteOwnDomain(t *testing.T) {
	central := natstest.StartCluster(t, natstest.ClusterOptions{Name: "central", Size: 1, JSDomain: "hub", Leaf: true})
	ls := natstest.StartLeafSite(t, natstest.LeafSiteOptions{Hub: central, Name: "edge", Delay: wanDelay})
	cURL, eURL := central.Servers[0].URL(), ls.Server.URL()
	natstest.WaitReachable(t, cURL, eURL, 30*time.Second)
	natstest.WaitReachable(t, eURL, cURL, 30*time.Second)
	_, jsC := connect(t, cURL, "")
	_, jsEdge := connect(t, eURL, "")     // the leaf's own domain
	_, jsCtoE := connect(t, cURL, "edge") // central reading the edge domain
	waitJS(t, jsC, 60*time.Second)
	waitJS(t, jsEdge, 60*time.Second)
	ctx := timeout(t, 120*time.Second)

	ai, err := jsEdge.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("an edge client's default JetStream is domain %q", ai.Domain)
	if ai.Domain != "edge" {
		t.Errorf("edge client's JetStream is domain %q", ai.Domain)
	}
	edgeOwn, err := jsEdge.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence_edge"})
	if err != nil {
		t.Fatal(err)
	}
	// The §6 name in each domain: no clash between domains.
	if _, err := jsEdge.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence", Sources: []*jetstream.StreamSource{{Name: "hub_presence_edge"}, {Name: "hub_presence_central", Domain: "hub"}}}); err != nil {
		t.Fatalf("edge view: %v", err)
	}
	centralOwn, err := jsC.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence_central"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsC.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence", Sources: []*jetstream.StreamSource{{Name: "hub_presence_central"}, {Name: "hub_presence_edge", Domain: "edge"}}}); err != nil {
		t.Fatalf("central view: %v", err)
	}
	viewC, _ := jsC.KeyValue(ctx, "hub_presence")
	viewE, _ := jsEdge.KeyValue(ctx, "hub_presence")
	edgeFromC, err := jsCtoE.KeyValue(ctx, "hub_presence_edge")
	if err != nil {
		t.Fatalf("central opening the edge bucket through the domain: %v", err)
	}
	t.Logf("one bucket named hub_presence in each domain: created in both")

	p50, worst, err := timed(20, func(i int) error { _, err := edgeOwn.Put(ctx, key(i), []byte("e")); return err })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("edge client put in the edge bucket: p50 %.2f ms max %.2f ms", ms(p50), ms(worst))
	p50, worst, err = timed(20, func(i int) error { _, err := edgeFromC.Get(ctx, key(i)); return err })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("central client get from the edge domain ($JS.edge.API): p50 %.1f ms max %.1f ms", ms(p50), ms(worst))
	if _, err := centralOwn.Put(ctx, "c1", []byte("c")); err != nil {
		t.Fatal(err)
	}
	found := func(kv jetstream.KeyValue, k string) func() error {
		return func() error { _, err := kv.Get(ctx, k); return err }
	}
	waitFor(t, 30*time.Second, found(viewC, key(19)))
	waitFor(t, 30*time.Second, found(viewE, "c1"))
	if _, err := edgeOwn.Put(ctx, "e-new", nil); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, 10*time.Second, found(viewC, "e-new"))
	t.Logf("edge put reaches central's hub_presence view after %.1f ms", ms(d))

	// Cuts of growing length: the site keeps its state; central cannot
	// read it; the views converge after heal.
	centralView := jetstream.KeyValueConfig{Bucket: "hub_presence", Sources: []*jetstream.StreamSource{{Name: "hub_presence_central"}, {Name: "hub_presence_edge", Domain: "edge"}}}
	for round, c := range []struct {
		cut time.Duration
		// kick: right after heal, drop central's edge source and add it
		// back (the edge view is left alone, as the control).
		kick bool
	}{{5 * time.Second, false}, {20 * time.Second, false}, {20 * time.Second, true}} {
		cut := c.cut
		ls.Cut()
		cutAt := time.Now()
		ke, kc := fmt.Sprintf("cut%d-e", round), fmt.Sprintf("cut%d-c", round)
		for i := range 20 {
			if _, err := edgeOwn.Put(ctx, fmt.Sprintf("%s%d", ke, i), nil); err != nil {
				t.Fatalf("edge put during cut: %v", err)
			}
			if _, err := centralOwn.Put(ctx, fmt.Sprintf("%s%d", kc, i), nil); err != nil {
				t.Fatalf("central put during cut: %v", err)
			}
		}
		if round == 0 {
			d, err = attempt(t, 3*time.Second, func(ctx context.Context) error { _, err := edgeFromC.Get(ctx, key(0)); return err })
			t.Logf("cut: central get from the edge domain: %s in %.0f ms", errText(err), ms(d))
			d, err = attempt(t, 3*time.Second, func(ctx context.Context) error {
				_, err := jsEdge.CreateStream(ctx, jetstream.StreamConfig{Name: "EDGE_CUT", Subjects: []string{"edgecut.>"}})
				return err
			})
			t.Logf("cut: edge creates a stream in its own domain: %s in %.1f ms", errText(err), ms(d))
			if err != nil {
				t.Errorf("the edge domain could not create a stream during the cut: %v", err)
			}
			d, err = attempt(t, 3*time.Second, func(ctx context.Context) error { return watchOnce(ctx, viewE) })
			t.Logf("cut: edge starts a watch (consumer) on its view: %s in %.1f ms", errText(err), ms(d))
			if err != nil {
				t.Errorf("the edge domain could not start a watch during the cut: %v", err)
			}
		}
		waitFor(t, cut+30*time.Second, func() error {
			if time.Since(cutAt) < cut {
				return errNotYet
			}
			return nil
		})
		ls.Heal()
		t0 := time.Now()
		natstest.WaitReachable(t, cURL, eURL, 60*time.Second)
		dLink := time.Since(t0)
		if c.kick {
			only := centralView
			only.Sources = centralView.Sources[:1]
			if _, err := jsC.UpdateKeyValue(ctx, only); err != nil {
				t.Fatal(err)
			}
			if _, err := jsC.UpdateKeyValue(ctx, centralView); err != nil {
				t.Fatal(err)
			}
		}
		var dC, dE time.Duration
		_, _ = attempt(t, 2*time.Minute, func(ctx context.Context) error {
			for ctx.Err() == nil && (dC == 0 || dE == 0) {
				if dC == 0 && found(viewC, ke+"19")() == nil {
					dC = time.Since(t0)
				}
				if dE == 0 && found(viewE, kc+"19")() == nil {
					dE = time.Since(t0)
				}
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		})
		if dC == 0 || dE == 0 {
			// Not a failure of the helpers: the finding that a source
			// may take minutes after a second long cut.
			t.Logf("not converged within 2 min of heal: central view %v, edge view %v (0 = not yet)", dC, dE)
		}
		t.Logf("heal after %.1f s of cut (central's source re-added: %v): leaf link carries requests after %.0f ms; central view has the edge's cut keys after %.0f ms, edge view central's after %.0f ms", t0.Sub(cutAt).Seconds(), c.kick, ms(dLink), ms(dC), ms(dE))
	}
}
