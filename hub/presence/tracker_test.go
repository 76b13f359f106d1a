package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeClock is a Clock that moves only when Advance says so. Calls that
// fall due run on goroutines of their own, as time.AfterFunc's do.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool // or fired. Guarded by c.mu.
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		t.stopped = true
		go f()
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves the clock by d and runs what fell due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t.f)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, f := range due {
		go f()
	}
}

// tasks is a test's task spawner: it refuses work once closed, and its
// cleanup waits for what it ran.
type tasks struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (ts *tasks) Go(f func()) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return false
	}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		f()
	}()
	return true
}

// lostSet records the sessions a tracker says it lost.
type lostSet struct {
	mu  sync.Mutex
	got map[string]bool // "<sn>/<session>"
}

func (l *lostSet) add(sn, session string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.got == nil {
		l.got = make(map[string]bool)
	}
	l.got[sn+"/"+session] = true
}

func (l *lostSet) has(sn, session string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[sn+"/"+session]
}

// openTracker opens a tracker for node on ns with cfg's TTLs (defaults
// for a test otherwise), its clock and Lost callback, and stops it in
// cleanup.
func openTracker(t *testing.T, ns *server.Server, node string, cfg Config, opts ...nats.Option) *Tracker {
	t.Helper()
	return openTrackerTB(t, ns, node, cfg, opts...)
}

func openTrackerTB(t testing.TB, ns *server.Server, node string, cfg Config, opts ...nats.Option) *Tracker {
	t.Helper()
	nc := natstest.Connect(t, ns, opts...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	ts := &tasks{}
	cfg.JS, cfg.Conn, cfg.NodeID, cfg.RunCtx, cfg.Go = js, nc, node, runCtx, ts.Go
	if cfg.PresenceTTL == 0 {
		cfg.PresenceTTL = time.Minute
	}
	if cfg.NodeTTL == 0 {
		cfg.NodeTTL = time.Minute
	}
	if cfg.OfflineGrace == 0 {
		cfg.OfflineGrace = 10 * time.Second
	}
	if cfg.History == 0 {
		cfg.History = time.Hour
	}
	ctx, cancelOpen := context.WithTimeout(runCtx, 20*time.Second)
	defer cancelOpen()
	tr, err := Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancelStop := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelStop()
		tr.Stop(ctx)
		ts.mu.Lock()
		ts.closed = true
		ts.mu.Unlock()
		cancel()
		ts.wg.Wait()
	})
	return tr
}

// records collects the records the trackers stored, as their record
// sinks get them (what the hub sends to watchers): a core subscriber of
// hub.presence.> would also see the appends the stream refused.
type records struct {
	mu   sync.Mutex
	list []schema.PresenceRecord
}

func (rs *records) sink(r schema.PresenceRecord, _ uint64, data []byte) {
	var stored schema.PresenceRecord
	if json.Unmarshal(data, &stored) != nil || stored.SN != r.SN || stored.Reason != r.Reason {
		panic(fmt.Sprintf("record %+v handed over as %s", r, data))
	}
	rs.mu.Lock()
	rs.list = append(rs.list, stored)
	rs.mu.Unlock()
}

// history reads sn's records from HUB_PRESENCE, in order, as "online/reason".
func history(t *testing.T, tr *Tracker, sn string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := tr.cfg.JS.OrderedConsumer(ctx, schema.StreamPresence, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"hub.presence." + sn}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r schema.PresenceRecord
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%v/%s", r.Online, r.Reason))
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
	}
}

// of returns sn's records, as "online/reason" strings.
func (rs *records) of(sn string) []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []string
	for _, r := range rs.list {
		if r.SN == sn {
			out = append(out, fmt.Sprintf("%v/%s", r.Online, r.Reason))
		}
	}
	return out
}

// want waits until sn's records, handed over and stored (as tr reads
// them), are exactly want.
func (rs *records) want(t *testing.T, tr *Tracker, sn string, want ...string) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		if got := rs.of(sn); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("%s: records %v, want %v", sn, got, want)
		}
		if h := history(t, tr, sn); fmt.Sprint(h) != fmt.Sprint(want) {
			return fmt.Errorf("%s: stored %v, want %v", sn, h, want)
		}
		return nil
	})
}

func entryOf(t *testing.T, tr *Tracker, sn string) (schema.PresenceEntry, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var pe schema.PresenceEntry
	e, err := tr.kv.Get(ctx, sn)
	if err != nil {
		return pe, err
	}
	return pe, json.Unmarshal(e.Value(), &pe)
}

func dev(sn, session string) Device {
	return Device{SN: sn, Type: "dog", Group: "g1", Session: session, Addr: "127.0.0.1:1"}
}

// A device connected on A that connects on B: one connected record, and
// A, whose next refresh is refused, is told the device is no longer its.
func TestTrackerTakeover(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	rs := &records{}
	clockA := newFakeClock()
	var lostA lostSet
	a := openTracker(t, ns, "a", Config{Clock: clockA, Lost: lostA.add, Stored: rs.sink})
	b := openTracker(t, ns, "b", Config{Clock: newFakeClock(), Stored: rs.sink})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Connected(ctx, dev("TK-1", "s1")); err != nil {
		t.Fatal(err)
	}
	rs.want(t, a, "TK-1", "true/connected")
	if err := b.Connected(ctx, dev("TK-1", "s2")); err != nil {
		t.Fatal(err)
	}
	if pe, err := entryOf(t, b, "TK-1"); err != nil || pe.Session != "s2" || pe.Node != "b" {
		t.Fatalf("entry %+v, %v: want B's session s2", pe, err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		clockA.Advance(time.Minute) // A's refresh falls due, and is refused
		if !lostA.has("TK-1", "s1") {
			return fmt.Errorf("A not told")
		}
		return nil
	})
	a.mu.Lock()
	held := a.local["TK-1"] != nil
	a.mu.Unlock()
	if held {
		t.Fatal("A still refreshes the device")
	}
	rs.want(t, a, "TK-1", "true/connected")
}

// A session that ended is reported offline once its grace has passed on
// the tracker's clock, and its entry goes; not before.
func TestTrackerOfflineAfterGrace(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	rs := &records{}
	clock := newFakeClock()
	a := openTracker(t, ns, "a", Config{Clock: clock, OfflineGrace: 30 * time.Second, Stored: rs.sink})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Connected(ctx, dev("GR-1", "s1")); err != nil {
		t.Fatal(err)
	}
	a.Disconnected("GR-1", "s1", schema.ReasonClosed)
	clock.Advance(29 * time.Second)
	rs.want(t, a, "GR-1", "true/connected")
	if _, err := entryOf(t, a, "GR-1"); err != nil {
		t.Fatalf("entry gone within the grace: %v", err)
	}
	clock.Advance(time.Second)
	rs.want(t, a, "GR-1", "true/connected", "false/closed")
	natstest.Eventually(t, 10*time.Second, func() error {
		if _, err := entryOf(t, a, "GR-1"); err == nil {
			return fmt.Errorf("entry still there")
		}
		return nil
	})
}

// A node that stops refreshing its liveness entry is lost: the
// coordinator (smallest live id) reports its devices node_lost once the
// grace has passed on its clock, and empties the lost node's index.
func TestTrackerNodeLost(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	rs := &records{}
	clockA := newFakeClock()
	a := openTracker(t, ns, "a", Config{Clock: clockA, NodeTTL: time.Second, Stored: rs.sink})
	// B's clock never moves: it never refreshes its liveness entry, which
	// the server expires after its TTL.
	b := openTracker(t, ns, "b", Config{Clock: newFakeClock(), NodeTTL: time.Second, Stored: rs.sink})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, sn := range []string{"NL-1", "NL-2"} {
		if err := b.Connected(ctx, dev(sn, "s-"+sn)); err != nil {
			t.Fatal(err)
		}
		rs.want(t, a, sn, "true/connected")
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		a.mu.Lock()
		_, live := a.nodes["b"]
		a.mu.Unlock()
		if live {
			return fmt.Errorf("b still live for A")
		}
		return nil
	})
	for _, sn := range []string{"NL-1", "NL-2"} {
		rs.want(t, a, sn, "true/connected") // the grace runs
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		clockA.Advance(a.cfg.OfflineGrace)
		for _, sn := range []string{"NL-1", "NL-2"} {
			if got := rs.of(sn); fmt.Sprint(got) != "[true/connected false/node_lost]" {
				return fmt.Errorf("%s: records %v", sn, got)
			}
			if h := history(t, a, sn); fmt.Sprint(h) != "[true/connected false/node_lost]" {
				return fmt.Errorf("%s: stored %v", sn, h)
			}
		}
		return nil
	})
	natstest.Eventually(t, 10*time.Second, func() error {
		sns, err := a.indexed(ctx, "b")
		if err != nil || len(sns) != 0 {
			return fmt.Errorf("b's index: %v, %v", sns, err)
		}
		return nil
	})
}

// A device whose grace ends on A just as it reconnects on B: whichever
// wins, its records alternate, and the last says what the entry says.
func TestTrackerRacingReconnect(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	rs := &records{}
	clockA := newFakeClock()
	a := openTracker(t, ns, "a", Config{Clock: clockA, Stored: rs.sink})
	b := openTracker(t, ns, "b", Config{Clock: newFakeClock(), Stored: rs.sink})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 200
	for i := range n {
		sn := fmt.Sprintf("RR-%d", i)
		if err := a.Connected(ctx, dev(sn, "a-"+sn)); err != nil {
			t.Fatal(err)
		}
		a.Disconnected(sn, "a-"+sn, schema.ReasonClosed)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		sn := fmt.Sprintf("RR-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Staggered by a few round trips each, so that the connects
			// fall before, within and after the expiries' writes.
			for range i % 16 {
				if err := b.cfg.Conn.Flush(); err != nil {
					errs <- err
					return
				}
			}
			errs <- b.Connected(ctx, dev(sn, "b-"+sn))
		}()
	}
	clockA.Advance(a.cfg.OfflineGrace) // the expiries race the connects
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	patterns := map[string]int{}
	defer func() { t.Logf("record patterns: %v", patterns) }()
	for i := range n {
		sn := fmt.Sprintf("RR-%d", i)
		defer func() { patterns[fmt.Sprint(rs.of(sn))]++ }()
		natstest.Eventually(t, 15*time.Second, func() error {
			pe, err := entryOf(t, b, sn)
			if err != nil || pe.Session != "b-"+sn {
				return fmt.Errorf("%s: entry %+v, %v", sn, pe, err)
			}
			got := rs.of(sn)
			for k, r := range got {
				if want := fmt.Sprint(k%2 == 0); r[:len(want)] != want {
					return fmt.Errorf("%s: records %v do not alternate (stored %v)", sn, got, history(t, b, sn))
				}
			}
			if len(got) == 0 || len(got)%2 == 0 {
				return fmt.Errorf("%s: records %v, want the last online", sn, got)
			}
			if h := history(t, b, sn); fmt.Sprint(h) != fmt.Sprint(got) {
				return fmt.Errorf("%s: records %v handed over, %v stored", sn, got, h)
			}
			return nil
		})
	}
}
