package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// finishWithin runs f and fails the test with every goroutine's stack when
// it has not returned within d: a deadlock shows where each side waits.
func finishWithin(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		var b bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
		_, _ = os.Stderr.Write(b.Bytes())
		t.Fatalf("not done within %s: deadlock? (goroutines dumped above)", d)
	}
}

func request(service, args string) *wire.Message {
	return &wire.Message{Op: wire.OpRequest, Service: service, RequestID: "1", HasRequestID: true, Args: json.RawMessage(args)}
}

// Admins adding and removing topics, the summary topic among them, while
// status pushes to them are delivered: subscribing once held the session's
// lock while it waited for the index's, and delivery took them the other
// way round, which stopped the node for good.
func TestSubscribeTogglesWhilePushesFlow(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	var admins []*Session
	for i := range 20 {
		s, _ := attach(t, srv, -1, admin(fmt.Sprintf("a%d", i), "*"))
		admins = append(admins, s)
	}
	finishWithin(t, 30*time.Second, func() {
		var wg sync.WaitGroup
		for _, s := range admins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, werr := srv.serveSubscribe(s, request("/admin/subscribe", `{"all":true,"topics":["status"]}`)); werr != nil {
					t.Errorf("subscribe: %v", werr)
					return
				}
				for range 300 {
					if _, werr := srv.serveSubscribe(s, request("/admin/subscribe", `{"all":true,"topics":["summary"]}`)); werr != nil {
						t.Errorf("subscribe: %v", werr)
						return
					}
					if _, werr := srv.serveUnsubscribe(s, request("/admin/unsubscribe", `{"all":true,"topics":["summary"]}`)); werr != nil {
						t.Errorf("unsubscribe: %v", werr)
						return
					}
				}
				if _, werr := srv.serveUnsubscribe(s, request("/admin/unsubscribe", `{"all":true}`)); werr != nil {
					t.Errorf("unsubscribe: %v", werr)
				}
			}()
		}
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20000 {
					sn := fmt.Sprintf("D%d", (w*20000+i)%1000)
					srv.subs.deliver(topicStatus, 0, sn, "dog", "g1", "/push/status", "x", []byte(`{}`))
				}
			}()
		}
		wg.Wait()
	})
	// Nothing is left behind: every selector and summary entry went with
	// the last unsubscribe.
	srv.subs.mu.RLock()
	defer srv.subs.mu.RUnlock()
	if len(srv.subs.sels) != 0 || len(srv.subs.summary) != 0 {
		t.Fatalf("index not empty after unsubscribing: %d selectors, %d summary sessions", len(srv.subs.sels), len(srv.subs.summary))
	}
}

// A session subscribed to one topic under a device and to another under
// "all" gets news of both topics about that device.
func TestDeliverAcrossSelectors(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	s, ft := attach(t, srv, 100, admin("a", "*"))
	if _, werr := srv.serveSubscribe(s, request("/admin/subscribe", `{"devices":["D1"],"topics":["presence"]}`)); werr != nil {
		t.Fatal(werr)
	}
	if _, werr := srv.serveSubscribe(s, request("/admin/subscribe", `{"all":true,"topics":["status"]}`)); werr != nil {
		t.Fatal(werr)
	}
	before := ft.count()
	srv.subs.deliver(topicStatus, 0, "D1", "dog", "g1", "/push/status", "s1", []byte(`{}`))
	srv.subs.deliver(topicPresence, 0, "D1", "dog", "g1", "/push/presence", "p1", []byte(`{}`))
	srv.subs.deliver(topicEvent, 0, "D1", "dog", "g1", "/push/event", "e1", []byte(`{}`))
	if got := ft.count() - before; got != 2 {
		t.Fatalf("got %d pushes, want 2 (status through all, presence through the device)", got)
	}
}

// gateTransport is a fake transport whose Send blocks while the gate is
// shut: the slowest a transport can be.
type gateTransport struct {
	*fakeTransport
	entered chan struct{} // closed when a Send first waits
	open    chan struct{} // closed to let Sends through
	once    sync.Once
}

func (g *gateTransport) Send(frame []byte) error {
	select {
	case <-g.open:
	default:
		g.once.Do(func() { close(g.entered) })
		<-g.open
	}
	return g.fakeTransport.Send(frame)
}

// subjectOnOtherShard finds a device push subject dispatched by a shard
// other than (or, with same, the same as) that of subject.
func subjectOnShard(t *testing.T, srv *Server, subject string, same bool) (sn, subj string) {
	t.Helper()
	for i := range 1000 {
		sn = fmt.Sprintf("U%d", i)
		subj, _ = subjects.DevicePush(sn)
		if (srv.interest.shard(subj) == srv.interest.shard(subject)) == same {
			return sn, subj
		}
	}
	t.Fatal("no such subject")
	return "", ""
}

// A broadcast walking its members must not hold up a join, a leave or a
// unicast on another subject, however slow one member's transport is: the
// walk once held the interest's lock across each send, a join then held
// the registry's lock waiting for it, and every dispatch stalled behind
// that.
func TestBroadcastDoesNotStallJoinsOrUnicasts(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{})
	for i := range 50 {
		attach(t, srv, 1000, device(fmt.Sprintf("B%d", i), "dog", "g1"))
	}
	g := &gateTransport{fakeTransport: &fakeTransport{limit: 1000}, entered: make(chan struct{}), open: make(chan struct{})}
	gs := srv.Open(g, "test")
	g.sess = gs
	if werr := srv.establish(context.Background(), gs, &Identity{Role: "device", SN: "SLOW", Type: "dog", Group: "g1", AuthAt: time.Now()}, true); werr != nil {
		t.Fatal(werr)
	}
	defer close(g.open)
	sn, unicast := subjectOnShard(t, srv, subjects.AllPush, false)
	_, target := attach(t, srv, 1000, device(sn, "cat", "g2"))

	if err := nc.Publish(subjects.AllPush, []byte(`{"service":"/x/all","values":{}}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the broadcast never reached the slow session")
	}
	// The broadcast is now stuck in the slow session's Send.
	finishWithin(t, 10*time.Second, func() {
		s, _ := attach(t, srv, 1000, device("NEW", "dog", "g1"))
		s.Close(wire.CloseKicked, "test")
	})
	before := target.count()
	if err := nc.Publish(unicast, []byte(`{"service":"/x/one","values":{}}`)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if target.count() == before {
			return fmt.Errorf("unicast not delivered while a broadcast is slow")
		}
		return nil
	})
}

// countingWriter counts the lines written to it.
type countingWriter struct {
	mu    sync.Mutex
	lines map[string]int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		_ = json.Unmarshal([]byte(line), &rec)
		w.lines[rec.Msg]++
	}
	return len(p), nil
}

func (w *countingWriter) count(msg string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines[msg]
}

// A flood of garbage on one push subject costs that subject alone: pushes
// to a device whose subject shares the flood's dispatch shard all arrive,
// every flooded message is counted by the reason it was dropped, and the
// log stays bounded.
func TestFloodOnOneSubjectLosesNothingElsewhere(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	logs := &countingWriter{lines: map[string]int{}}
	reg := prometheus.NewRegistry()
	srv := startTestServer(t, nc, Config{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Registerer: reg,
	})
	attach(t, srv, -1, device("FLOODED", "dog", "g1")) // a member of hub.all.push
	sn, unicast := subjectOnShard(t, srv, subjects.AllPush, true)
	_, target := attach(t, srv, 1<<20, device(sn, "cat", "g2"))

	pub := natstest.Connect(t, ns)
	const flood, wanted = 200_000, 2_000
	var published atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range flood {
			if err := pub.Publish(subjects.AllPush, []byte(`not json`)); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			published.Add(1)
		}
	}()
	for i := range wanted {
		if err := nc.Publish(unicast, fmt.Appendf(nil, `{"service":"/x/one","values":{"i":%d}}`, i)); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			if err := nc.FlushTimeout(time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if err := pub.FlushTimeout(time.Minute); err != nil {
		t.Fatal(err)
	}
	dropped := func() float64 {
		n := 0.0
		for _, r := range []string{dropMalformed, dropBacklog, dropOverflow} {
			n += testutil.ToFloat64(srv.metrics.pushesDropped.WithLabelValues(r))
		}
		return n
	}
	natstest.Eventually(t, 60*time.Second, func() error {
		if got := target.count(); got != wanted {
			return fmt.Errorf("device got %d of %d pushes (dropped: backlog %v, overflow %v)", got, wanted,
				testutil.ToFloat64(srv.metrics.pushesDropped.WithLabelValues(dropBacklog)),
				testutil.ToFloat64(srv.metrics.pushesDropped.WithLabelValues(dropOverflow)))
		}
		if got := dropped(); got != flood {
			return fmt.Errorf("%v of %d flooded messages counted", got, flood)
		}
		return nil
	})
	if n := testutil.ToFloat64(srv.metrics.pushesDropped.WithLabelValues(dropOverflow)); n != 0 {
		t.Errorf("%v messages overflowed nats.go's channel before the backlog", n)
	}
	t.Logf("flood: malformed %v, backlog %v", testutil.ToFloat64(srv.metrics.pushesDropped.WithLabelValues(dropMalformed)),
		testutil.ToFloat64(srv.metrics.pushesDropped.WithLabelValues(dropBacklog)))
	// One warning per second per kind, plus the first.
	limit := 2 * (int(time.Since(start).Seconds()) + 2)
	if n := logs.count("push dropped"); n > limit {
		t.Fatalf("%d 'push dropped' log lines for a flood of %v s, want at most %d", n, time.Since(start).Seconds(), limit)
	}
}
