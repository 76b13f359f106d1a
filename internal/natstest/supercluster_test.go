package natstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestStartSuperclusterCutHeal(t *testing.T) {
	sc := StartSupercluster(t, SuperclusterOptions{Delay: 20 * time.Millisecond})
	east, west := sc.Cluster("east"), sc.Cluster("west")
	if east == nil || west == nil || sc.Cluster("north") != nil {
		t.Fatal("clusters by name")
	}
	WaitReachable(t, east.URLs(), west.URLs(), 30*time.Second)
	WaitReachable(t, west.URLs(), east.URLs(), 30*time.Second)
	for name, ps := range sc.WAN {
		for _, p := range ps {
			if p.Stats().Accepted == 0 {
				t.Fatalf("no gateway connection passed the %s proxy %s", name, p.Addr())
			}
		}
	}
	sub, err := nats.Connect(west.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := sub.Subscribe("x", func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
		t.Fatal(err)
	}
	_ = sub.Flush()
	pub, err := nats.Connect(east.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	Eventually(t, 10*time.Second, func() error { _, err := pub.Request("x", nil, time.Second); return err })
	t0 := time.Now()
	if _, err := pub.Request("x", nil, time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 40*time.Millisecond {
		t.Fatalf("round trip across the WAN took %v, less than the 2×20 ms delay", d)
	}

	sc.Cut()
	Eventually(t, 10*time.Second, func() error {
		_, err := pub.Request("x", nil, 500*time.Millisecond)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil
		}
		return errors.New("still reachable")
	})
	sc.Heal()
	WaitReachable(t, east.URLs(), west.URLs(), 60*time.Second)
}

func TestStartLeafSiteDomains(t *testing.T) {
	hub := StartCluster(t, ClusterOptions{Name: "central", Size: 1, JSDomain: "hub", Leaf: true})
	ls := StartLeafSite(t, LeafSiteOptions{Hub: hub, Name: "edge"})
	WaitReachable(t, hub.URLs(), ls.Server.URL(), 30*time.Second)
	if ls.WAN[0].Stats().Accepted == 0 {
		t.Fatal("the leaf connection did not pass the proxy")
	}
	for url, domain := range map[string]string{hub.URLs(): "hub", ls.Server.URL(): "edge"} {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		Eventually(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			ai, err := js.AccountInfo(ctx)
			if err != nil {
				return err
			}
			if ai.Domain != domain {
				t.Fatalf("JetStream at %s is domain %q, want %q", url, ai.Domain, domain)
			}
			return nil
		})
	}
	ls.Cut()
	ls.Heal()
	WaitReachable(t, ls.Server.URL(), hub.URLs(), 60*time.Second)
}
