package dcs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// wanDelay is the delay each way between the data centres.
const wanDelay = 40 * time.Millisecond

// side is one data centre of a test topology: a node's connection, its
// JetStream, its own bucket, the KV view as its JetStream serves it, and
// its engine.
type side struct {
	dc   string
	url  string
	nc   *nats.Conn
	js   jetstream.JetStream
	own  jetstream.KeyValue
	view jetstream.KeyValue
	e    *Engine
}

// pair is two data centres and the WAN between them.
type pair struct {
	east, west *side
	cut, heal  func()
	// shared: one JetStream (a supercluster): one set of views.
	shared bool
}

var app = nats.UserInfo("app", "app")

// superAccounts gives the supercluster's servers a system account and an
// application account with JetStream.
const superAccounts = `
accounts {
  SYS { users: [{user: sys, password: sys}] }
  APP { jetstream: enabled, users: [{user: app, password: app}] }
}
system_account: SYS
`

func dial(t *testing.T, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
	return nc, js
}

// leafPair is the recommended topology: east a cluster (one server) with
// JetStream domain "east", west a leaf site with its own domain "west",
// linked by a leaf connection through a WAN proxy; one engine in each.
func leafPair(t *testing.T, ctx context.Context, mod func(*Config)) *pair {
	t.Helper()
	east := natstest.StartCluster(t, natstest.ClusterOptions{Name: "east", Size: 1, JSDomain: "east", Leaf: true})
	ls := natstest.StartLeafSite(t, natstest.LeafSiteOptions{Hub: east, Name: "west", Delay: wanDelay})
	p := &pair{east: &side{dc: "east", url: east.Servers[0].URL()}, west: &side{dc: "west", url: ls.Server.URL()}, cut: ls.Cut, heal: ls.Heal}
	natstest.WaitReachable(t, p.east.url, p.west.url, 30*time.Second)
	natstest.WaitReachable(t, p.west.url, p.east.url, 30*time.Second)
	for _, s := range []*side{p.east, p.west} {
		s.nc, s.js = dial(t, s.url)
		s.own = own(t, ctx, s.js, s.dc, nil)
		cfg := Config{Conn: s.nc, JS: s.js, DC: s.dc, Node: s.dc + "-1", Views: testViews(nil)}
		if mod != nil {
			mod(&cfg)
		}
		s.e = start(t, ctx, cfg)
		if d := s.e.cfg.Domain; d != s.dc {
			t.Fatalf("%s engine found domain %q", s.dc, d)
		}
		view, err := s.js.KeyValue(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		s.view = view
	}
	return p
}

// superPair is a supercluster: east and west clusters (one server each)
// over gateways through WAN proxies, one JetStream; each data centre's
// own stores placed in it, the views (one set) placed in east.
func superPair(t *testing.T, ctx context.Context, mod func(*Config)) *pair {
	t.Helper()
	sc := natstest.StartSupercluster(t, natstest.SuperclusterOptions{Delay: wanDelay, Extra: superAccounts})
	p := &pair{
		east: &side{dc: "east", url: sc.Cluster("east").Servers[0].URL()}, west: &side{dc: "west", url: sc.Cluster("west").Servers[0].URL()},
		cut: sc.Cut, heal: sc.Heal, shared: true,
	}
	natstest.WaitReachable(t, p.east.url, p.west.url, 30*time.Second, app)
	natstest.WaitReachable(t, p.west.url, p.east.url, 30*time.Second, app)
	for _, s := range []*side{p.east, p.west} {
		s.nc, s.js = dial(t, s.url, app)
		s.own = own(t, ctx, s.js, s.dc, &jetstream.Placement{Cluster: s.dc})
	}
	for _, s := range []*side{p.east, p.west} {
		cfg := Config{Conn: s.nc, JS: s.js, DC: s.dc, Node: s.dc + "-1", Views: testViews(&jetstream.Placement{Cluster: "east"})}
		if mod != nil {
			mod(&cfg)
		}
		s.e = start(t, ctx, cfg)
		if d := s.e.cfg.Domain; d != "" {
			t.Fatalf("%s engine found domain %q in a supercluster", s.dc, d)
		}
		view, err := s.js.KeyValue(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		s.view = view
	}
	return p
}

// views are the sides whose KV view is checked: both, or in a
// supercluster the one view (read from east).
func (p *pair) views() []*side {
	if p.shared {
		return []*side{p.east}
	}
	return []*side{p.east, p.west}
}

// other is the data centre on the other side of s.
func (p *pair) other(s *side) *side {
	if s == p.east {
		return p.west
	}
	return p.east
}

// connected waits until each engine hears the other and a first key of
// each data centre has reached every view (the first message of a new
// source takes about a second: the source's consumer starts).
func (p *pair) connected(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, s := range []*side{p.east, p.west} {
		natstest.Eventually(t, 30*time.Second, present(s.e, p.other(s).dc, true))
		if _, err := s.own.Put(ctx, "warm-"+s.dc, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range p.views() {
		natstest.Eventually(t, 60*time.Second, has(ctx, s.view, "warm-east", "warm-west"))
	}
}

// propagation measures, in each direction, the time from a put in a data
// centre's own bucket to the key in the other's view (and, shared, in the
// one view), and from a record to the record view.
func (p *pair) propagation(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, from := range []*side{p.west, p.east} {
		to := p.other(from)
		if p.shared {
			to = p.east
		}
		key := "p-" + from.dc
		if _, err := from.own.Put(ctx, key, nil); err != nil {
			t.Fatal(err)
		}
		dKey := waitFor(t, 10*time.Second, has(ctx, to.view, key))
		if _, err := from.js.Publish(ctx, "t.dc."+from.dc+".x."+key, []byte("rec")); err != nil {
			t.Fatal(err)
		}
		dRec := waitFor(t, 10*time.Second, hasRecord(ctx, to.js, "T", "t.x."+key))
		t.Logf("%s own -> %s view: key %.1f ms, record %.1f ms", from.dc, to.dc, ms(dKey), ms(dRec))
		if dKey > time.Second || dRec > time.Second {
			t.Errorf("%s -> %s: key %v, record %v, want < 1 s each", from.dc, to.dc, dKey, dRec)
		}
	}
}

// partition cuts the WAN for cut, with n writes (keys and records) on each
// side during it, heals it and returns the time from heal until every
// view holds the other side's writes, or 0 when that took longer than
// within.
func (p *pair) partition(t *testing.T, ctx context.Context, round int, cut time.Duration, n int, within time.Duration) time.Duration {
	return p.partitionWith(t, ctx, round, cut, n, within, nil)
}

// partitionWith is partition with during run in the cut, after the
// writes.
func (p *pair) partitionWith(t *testing.T, ctx context.Context, round int, cut time.Duration, n int, within time.Duration, during func()) time.Duration {
	t.Helper()
	p.cut()
	cutAt := time.Now()
	for _, s := range []*side{p.east, p.west} {
		natstest.Eventually(t, 30*time.Second, present(s.e, p.other(s).dc, false))
	}
	var keys []string
	for _, s := range []*side{p.east, p.west} {
		for i := range n {
			k := fmt.Sprintf("cut%d-%s-%d", round, s.dc, i)
			keys = append(keys, k)
			if _, err := s.own.Put(ctx, k, nil); err != nil {
				t.Fatalf("%s writes its own bucket during the cut: %v", s.dc, err)
			}
			if _, err := s.js.Publish(ctx, "t.dc."+s.dc+".x."+k, nil); err != nil {
				t.Fatalf("%s writes its own stream during the cut: %v", s.dc, err)
			}
		}
	}
	if during != nil {
		during()
	}
	if d := cut - time.Since(cutAt); d > 0 {
		select {
		case <-time.After(d): // the partition's length is the scenario, not a wait for a condition
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	p.heal()
	healed := time.Now()
	last := keys[len(keys)-1]
	converged := func() error {
		for _, s := range p.views() {
			if err := has(ctx, s.view, keys...)(); err != nil {
				return fmt.Errorf("%s view: %w", s.dc, err)
			}
			for _, k := range []string{keys[n-1], last} {
				if err := hasRecord(ctx, s.js, "T", "t.x."+k)(); err != nil {
					return fmt.Errorf("%s record view, %s: %w", s.dc, k, err)
				}
			}
		}
		return nil
	}
	for time.Since(healed) < within {
		if converged() == nil {
			return time.Since(healed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("round %d: not converged %v after heal: %v", round, within, converged())
	return 0
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestLeafDomains: two JetStream domains over a leaf link (40 ms each
// way), one engine in each: each learns the other and has its views
// source the other's own stores; writes propagate both ways; a short cut
// is noticed, and after heal the returning data centre's sources are
// kicked once and every view converges within 10 s.
func TestLeafDomains(t *testing.T) {
	ctx := timeout(t, 2*time.Minute)
	p := leafPair(t, ctx, nil)
	p.connected(t, ctx)
	for _, s := range []*side{p.east, p.west} {
		if got := sourceNames(t, ctx, s.js, "KV_t"); len(got) != 2 {
			t.Fatalf("%s view sources %v", s.dc, got)
		}
	}
	p.propagation(t, ctx)
	d := p.partition(t, ctx, 1, 2*time.Second, 10, 10*time.Second)
	if d == 0 {
		t.Fatal("views did not converge within 10 s of heal")
	}
	t.Logf("cut of 2 s: views converged %.2f s after heal", d.Seconds())
	for _, s := range []*side{p.east, p.west} {
		other := p.other(s).dc
		natstest.Eventually(t, 10*time.Second, func() error {
			if k := kicks(s.e, other); k != 1 {
				return fmt.Errorf("%s kicked %s's sources %v times, want 1", s.dc, other, k)
			}
			return nil
		})
	}

	// East's node restarts during a cut: it knows west from its views
	// (absent), and after heal kicks west's sources and converges.
	d = p.partitionWith(t, ctx, 2, 2*time.Second, 10, 10*time.Second, func() {
		p.east.e.Stop()
		cfg := p.east.e.cfg
		cfg.Metrics = nil
		p.east.e = start(t, ctx, cfg)
		w, ok := p.east.e.dc("west")
		if !ok || w.Present || w.Domain != "west" {
			t.Errorf("restarted during the cut, east knows west as %+v (known %v), want absent, domain west", w, ok)
		}
		natstest.Eventually(t, 5*time.Second, func() error {
			if time.Since(p.east.e.started) <= p.east.e.absent {
				return errors.New("engine just started")
			}
			return nil
		})
	})
	if d == 0 {
		t.Fatal("views did not converge within 10 s of heal after east's restart")
	}
	t.Logf("east restarted during a cut of 2 s: views converged %.2f s after heal", d.Seconds())
	natstest.Eventually(t, 10*time.Second, func() error {
		if k := kicks(p.east.e, "west"); k != 1 {
			return fmt.Errorf("restarted east kicked west's sources %v times, want 1", k)
		}
		return nil
	})
}

// TestSupercluster: one JetStream over gateways: both engines keep the
// same views, sourcing with no domain; after a cut they converge.
func TestSupercluster(t *testing.T) {
	ctx := timeout(t, 3*time.Minute)
	p := superPair(t, ctx, nil)
	p.connected(t, ctx)
	st, err := p.east.js.Stream(ctx, "KV_t")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.CachedInfo().Config.Sources {
		if s.Domain != "" || (s.External != nil && s.External.APIPrefix != "") {
			t.Errorf("source %s reaches another domain: %+v", s.Name, s.External)
		}
	}
	if n := len(st.CachedInfo().Config.Sources); n != 2 {
		t.Errorf("one view, %d sources, want 2", n)
	}
	p.propagation(t, ctx)
	d := p.partition(t, ctx, 1, 2*time.Second, 10, 30*time.Second)
	if d == 0 {
		t.Fatal("the view did not converge within 30 s of heal")
	}
	t.Logf("supercluster, cut of 2 s: the view converged %.2f s after heal", d.Seconds())
}
