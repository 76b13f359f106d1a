package dcs

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConfigRefused(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	ok := Config{Conn: nc, JS: js, DC: "east", Node: "n1", Sign: sign, Verify: verify}
	for name, mod := range map[string]func(*Config){
		"bad dc":      func(c *Config) { c.DC = "ea.st" },
		"empty dc":    func(c *Config) { c.DC = "" },
		"bad node":    func(c *Config) { c.Node = "n 1" },
		"bad domain":  func(c *Config) { c.Domain = "d*" },
		"no verify":   func(c *Config) { c.Verify = nil },
		"no conn":     func(c *Config) { c.Conn = nil },
		"view source": func(c *Config) { c.Views = []View{{Config: jetstream.StreamConfig{Name: "X"}}} },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			mod(&cfg)
			if _, err := Start(t.Context(), cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("Start: %v, want ErrConfig", err)
			}
		})
	}
}

// TestViewsCreatedWithOwnDC: one data centre works without any other
// node: at Start the views exist, sourcing this data centre's own stores,
// and the KV view answers as the bucket of its name.
func TestViewsCreatedWithOwnDC(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	ctx := timeout(t, 30*time.Second)
	kv := own(t, ctx, js, "east", nil)
	start(t, ctx, Config{Conn: nc, JS: js, DC: "east", Node: "n1", Views: testViews(nil)})
	for _, v := range []string{"KV_t", "T"} {
		if got := sourceNames(t, ctx, js, v); !slices.Equal(got, []string{map[string]string{"KV_t": "KV_t_east", "T": "T_east"}[v]}) {
			t.Errorf("view %s sources %v", v, got)
		}
	}
	view, err := js.KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "R-1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, has(ctx, view, "R-1"))
	if _, err := js.Publish(ctx, "t.dc.east.x.R-1", []byte("rec")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, hasRecord(ctx, js, "T", "t.x.R-1"))
	// The bucket created as jetstream.CreateKeyValue would (same config,
	// same sources) is the view itself: a no-op, not a conflict.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", Sources: []*jetstream.StreamSource{testViews(nil)[0].Source("east", "")}}); err != nil {
		t.Errorf("CreateKeyValue of the view's bucket: %v", err)
	}
}

// TestBadAnnounces: unsigned, badly signed, malformed and badly named
// announces are counted by reason and learn nothing; a flood of signed
// names stops at MaxDCs.
func TestBadAnnounces(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	ctx := timeout(t, 60*time.Second)
	own(t, ctx, js, "east", nil)
	e := start(t, ctx, Config{Conn: nc, JS: js, DC: "east", Node: "n1", Views: testViews(nil)[:1]})
	pub := natstest.Connect(t, ns)
	body := []byte(`{"dc":"west","domain":"","node":"w1","at":1}`)

	if err := pub.Publish(subjects.DCHello, body); err != nil { // unsigned
		t.Fatal(err)
	}
	forged := &nats.Msg{Subject: subjects.DCHello, Data: body}
	signWith([]byte("another secret"), forged)
	if err := pub.PublishMsg(forged); err != nil {
		t.Fatal(err)
	}
	resigned := &nats.Msg{Subject: subjects.DCHello, Data: body}
	sign(resigned)
	resigned.Data = []byte(`{"dc":"evil","domain":"","node":"w1","at":1}`) // body changed after signing
	if err := pub.PublishMsg(resigned); err != nil {
		t.Fatal(err)
	}
	bad := &nats.Msg{Subject: subjects.DCHello, Data: []byte("not json")}
	sign(bad)
	if err := pub.PublishMsg(bad); err != nil {
		t.Fatal(err)
	}
	for _, h := range []hello{{DC: "a.b", Node: "x"}, {DC: "west", Node: "x>"}, {DC: "west", Domain: "d d", Node: "x"}, {DC: "", Node: "x"}} {
		announceAs(t, pub, h)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		for reason, want := range map[string]float64{refUnsigned: 1, refBadSig: 2, refMalformed: 1, refBadName: 4} {
			if got := refused(e, reason); got != want {
				return fmt.Errorf("refused %s: %v, want %v", reason, got, want)
			}
		}
		return nil
	})
	if got := e.names(); !slices.Equal(got, []string{"east"}) {
		t.Fatalf("known after bad announces: %v", got)
	}

	const flood = 1000
	for i := range flood {
		announceAs(t, pub, hello{DC: fmt.Sprintf("f%04d", i), Node: "x"})
	}
	natstest.Eventually(t, 20*time.Second, func() error {
		if got, want := refused(e, refOverCap), float64(flood-(MaxDCs-1)); got != want {
			return fmt.Errorf("over cap %v, want %v", got, want)
		}
		return nil
	})
	if n := len(e.DCs()); n != MaxDCs {
		t.Errorf("%d data centres known after the flood, want the cap %d", n, MaxDCs)
	}
	if k := testutil.ToFloat64(e.m.known); k != MaxDCs {
		t.Errorf("gauge known %v, want %d", k, MaxDCs)
	}
	// The flood is over: its names go absent (and stay known).
	natstest.Eventually(t, 10*time.Second, func() error {
		if p := testutil.ToFloat64(e.m.present); p != 1 {
			return fmt.Errorf("gauge present %v, want 1 (this data centre)", p)
		}
		return nil
	})
	// The views follow the known set, never past the cap.
	natstest.Eventually(t, 30*time.Second, func() error {
		if n := len(sourceNames(t, ctx, js, "KV_t")); n != MaxDCs {
			return fmt.Errorf("view has %d sources, want %d", n, MaxDCs)
		}
		return nil
	})
	// A known data centre announced with another domain is refused.
	announceAs(t, pub, hello{DC: "f0001", Domain: "elsewhere", Node: "x"})
	natstest.Eventually(t, 10*time.Second, func() error {
		if refused(e, refConflict) != 1 {
			return errors.New("domain conflict not counted")
		}
		return nil
	})
}

// TestRestartLearnsFromViews: a node started while the other data centre
// cannot be heard knows it from the views' sources (absent), keeps its
// sources, and kicks them once when it is heard.
func TestRestartLearnsFromViews(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	ctx := timeout(t, 60*time.Second)
	own(t, ctx, js, "east", nil)
	westKV := own(t, ctx, js, "west", nil)
	views := testViews(nil)

	// A first life of the east node learns west by its announces.
	first := start(t, ctx, Config{Conn: nc, JS: js, DC: "east", Node: "n1", Views: views})
	pub := natstest.Connect(t, ns)
	announceAs(t, pub, hello{DC: "west", Node: "w1"})
	natstest.Eventually(t, 10*time.Second, func() error {
		if got := sourceNames(t, ctx, js, "KV_t"); !slices.Equal(got, []string{"KV_t_east", "KV_t_west"}) {
			return fmt.Errorf("sources %v", got)
		}
		return nil
	})
	first.Stop()

	// Restarted, west silent.
	e := start(t, ctx, Config{Conn: nc, JS: js, DC: "east", Node: "n1", Views: views})
	d, ok := e.dc("west")
	if !ok || d.Present || !d.Heard.IsZero() || d.Domain != "" {
		t.Fatalf("after restart, west is %+v (known %v), want known, absent, never heard", d, ok)
	}
	for _, v := range []string{"KV_t", "T"} {
		if got := sourceNames(t, ctx, js, v); len(got) != 2 {
			t.Errorf("view %s sources %v after restart, want both data centres", v, got)
		}
	}
	// West heard once this node has listened for a while (the partition
	// heals): present, its sources dropped and added back once. (Heard
	// as the node starts, the sources would be kicked only if stalled.)
	natstest.Eventually(t, 10*time.Second, func() error {
		if time.Since(e.started) <= e.absent {
			return errors.New("engine just started")
		}
		return nil
	})
	stopAnnounce := announceEvery(t, pub, hello{DC: "west", Node: "w1"}, 100*time.Millisecond)
	natstest.Eventually(t, 10*time.Second, present(e, "west", true))
	natstest.Eventually(t, 10*time.Second, func() error {
		if k := kicks(e, "west"); k != 1 {
			return fmt.Errorf("kicks %v", k)
		}
		return nil
	})
	stopAnnounce()
	view, _ := js.KeyValue(ctx, "t")
	if _, err := westKV.Put(ctx, "after-kick", nil); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, has(ctx, view, "after-kick"))
	if got := sourceNames(t, ctx, js, "KV_t"); len(got) != 2 {
		t.Errorf("sources after the kick: %v", got)
	}
}

// TestOneKickerPerDC: of two nodes of one data centre, only the one with
// the smaller id kicks the sources of a data centre that returns.
func TestOneKickerPerDC(t *testing.T) {
	ns := natstest.Run(t)
	ctx := timeout(t, 60*time.Second)
	ncA, ncB := natstest.Connect(t, ns), natstest.Connect(t, ns)
	jsA, _ := jetstream.New(ncA)
	jsB, _ := jetstream.New(ncB)
	own(t, ctx, jsA, "east", nil)
	a := start(t, ctx, Config{Conn: ncA, JS: jsA, DC: "east", Node: "a", Views: testViews(nil)})
	b := start(t, ctx, Config{Conn: ncB, JS: jsB, DC: "east", Node: "b", Views: testViews(nil)})
	pub := natstest.Connect(t, ns)
	for round := 1; round <= 2; round++ {
		stop := announceEvery(t, pub, hello{DC: "west", Node: "w1"}, 100*time.Millisecond)
		natstest.Eventually(t, 10*time.Second, present(a, "west", true))
		natstest.Eventually(t, 10*time.Second, present(b, "west", true))
		stop()
		natstest.Eventually(t, 10*time.Second, present(a, "west", false))
		natstest.Eventually(t, 10*time.Second, present(b, "west", false))
		// First round: west was new (learnt, no kick). Second: it
		// returned, and a (the smaller id) kicks.
		want := float64(round - 1)
		natstest.Eventually(t, 10*time.Second, func() error {
			if ka, kb := kicks(a, "west"), kicks(b, "west"); ka != want || kb != 0 {
				return fmt.Errorf("round %d: kicks a=%v b=%v, want %v and 0", round, ka, kb, want)
			}
			return nil
		})
	}
}

// announceEvery announces h every d until the returned func is called.
func announceEvery(t *testing.T, nc *nats.Conn, h hello, d time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tk := time.NewTicker(d)
		defer tk.Stop()
		for {
			if err := publishHello(nc, h); err != nil {
				t.Errorf("announce: %v", err)
				return
			}
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	}()
	var once bool
	stop = func() {
		if !once {
			once = true
			close(done)
			<-exited
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestCovers(t *testing.T) {
	tr := func(src string) []jetstream.SubjectTransformConfig {
		return []jetstream.SubjectTransformConfig{{Source: src, Destination: "$KV.t.>"}}
	}
	east := &jetstream.StreamSource{Name: "KV_t_east", SubjectTransforms: tr("$KV.t_east.>")}
	westByDomain := &jetstream.StreamSource{Name: "KV_t_west", Domain: "west", SubjectTransforms: tr("$KV.t_west.>")}
	westAsStored := &jetstream.StreamSource{Name: "KV_t_west", External: &jetstream.ExternalStream{APIPrefix: "$JS.west.API"}, SubjectTransforms: tr("$KV.t_west.>")}
	westLocal := &jetstream.StreamSource{Name: "KV_t_west", SubjectTransforms: tr("$KV.t_west.>")}
	westOldTransform := &jetstream.StreamSource{Name: "KV_t_west", Domain: "west", SubjectTransforms: tr("$KV.old.>")}
	for _, c := range []struct {
		name       string
		have, want []*jetstream.StreamSource
		ok         bool
	}{
		{"same", []*jetstream.StreamSource{east, westAsStored}, []*jetstream.StreamSource{east, westByDomain}, true},
		{"more kept", []*jetstream.StreamSource{westAsStored, east}, []*jetstream.StreamSource{east}, true},
		{"missing", []*jetstream.StreamSource{east}, []*jetstream.StreamSource{east, westByDomain}, false},
		{"other domain", []*jetstream.StreamSource{east, westLocal}, []*jetstream.StreamSource{westByDomain}, false},
		{"other transform", []*jetstream.StreamSource{westOldTransform}, []*jetstream.StreamSource{westByDomain}, false},
	} {
		if got := covers(c.have, c.want); got != c.ok {
			t.Errorf("%s: covers %v, want %v", c.name, got, c.ok)
		}
	}
}
