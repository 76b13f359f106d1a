package hub

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
)

// holdTransport is a fake transport that can hold a Send: each gate made
// by hold is taken by the next Send to come, which waits until the gate
// is released.
type holdTransport struct {
	*fakeTransport
	mu    sync.Mutex
	gates []*gate // not yet taken. Guarded by mu.
}

type gate struct {
	entered chan struct{} // closed when a Send waits on the gate
	open    chan struct{} // closed to let it through
	once    sync.Once
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// hold makes a gate, released at the latest when the test ends.
func (h *holdTransport) hold(t *testing.T) *gate {
	g := &gate{entered: make(chan struct{}), open: make(chan struct{})}
	t.Cleanup(g.release)
	h.mu.Lock()
	h.gates = append(h.gates, g)
	h.mu.Unlock()
	return g
}

func (h *holdTransport) Send(frame []byte) error {
	h.mu.Lock()
	var g *gate
	if len(h.gates) > 0 {
		g, h.gates = h.gates[0], h.gates[1:]
	}
	h.mu.Unlock()
	if g != nil {
		close(g.entered)
		<-g.open
	}
	return h.fakeTransport.Send(frame)
}

// Pushes on one subject arrive in the order they were published, whether
// the shard's mover dispatched them itself (the subject idle) or filed them
// in the subject's backlog for the worker (a burst arriving while one is
// being dispatched), and in every mix of the two.
func TestDispatchOrderInlineAndQueued(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{})
	ht := &holdTransport{fakeTransport: &fakeTransport{limit: 1 << 20}}
	s := srv.Open(ht, "test")
	ht.fakeTransport.sess = s
	if werr := srv.establish(t.Context(), s, &Identity{Role: "device", SN: "ORD", Type: "dog", Group: "g1", AuthAt: time.Now()}, true); werr != nil {
		t.Fatal(werr)
	}
	subj, _ := subjects.DevicePush("ORD")
	sh := srv.interest.shard(subj)
	pub := natstest.Connect(t, ns)
	sent := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			if err := pub.Publish(subj, fmt.Appendf(nil, `{"service":"/x/order","values":{"i":%d}}`, sent)); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	delivered := func(n int) {
		t.Helper()
		natstest.Eventually(t, 20*time.Second, func() error {
			if got := ht.count(); got != n {
				return fmt.Errorf("%d of %d pushes delivered", got, n)
			}
			return nil
		})
	}
	in := srv.interest.lookup(subj)
	const rounds, burst = 10, 300
	for range rounds {
		// One push to an idle subject: the mover dispatches it.
		before := sh.inlined.Load()
		publish(1)
		delivered(sent)
		if sh.inlined.Load() == before {
			t.Fatalf("push %d to an idle subject was not dispatched by the mover", sent-1)
		}
		// One more, held in the mover's Send, and a burst behind it,
		// which waits in the channel.
		g1 := ht.hold(t)
		publish(1)
		<-g1.entered
		publish(burst)
		natstest.Eventually(t, 20*time.Second, func() error {
			if n := len(sh.in); n < burst {
				return fmt.Errorf("%d of %d waiting in the shard's channel", n, burst)
			}
			return nil
		})
		// Released, the mover files the burst, and the worker's first
		// Send of it is held in turn.
		before = sh.inlined.Load()
		g2 := ht.hold(t)
		g1.release()
		<-g2.entered
		if n := sh.inlined.Load() - before; n != 0 {
			t.Fatalf("%d of a burst dispatched by the mover, want all filed", n)
		}
		// A push that comes while the worker has the subject's backlog
		// in hand must join the backlog, though the channel is empty.
		natstest.Eventually(t, 20*time.Second, func() error {
			if n := len(sh.in); n != 0 {
				return fmt.Errorf("%d waiting in the shard's channel", n)
			}
			return nil
		})
		late := ht.count() + 1
		publish(1)
		natstest.Eventually(t, 20*time.Second, func() error {
			want := fmt.Sprintf(`{"service":"/x/order","values":{"i":%d}}`, sent-1)
			sh.mu.Lock()
			filed := len(in.queue) > 0 && string(in.queue[len(in.queue)-1].Data) == want
			sh.mu.Unlock()
			if filed || ht.count() >= late {
				return nil
			}
			return fmt.Errorf("the late push is neither filed nor dispatched")
		})
		g2.release()
		delivered(sent)
	}
	ht.mu.Lock()
	frames := ht.frames
	ht.mu.Unlock()
	for i, f := range frames {
		var p wire.Push
		var v struct{ I int }
		if err := json.Unmarshal(f, &p); err != nil || json.Unmarshal(p.Values, &v) != nil {
			t.Fatalf("frame %d: %q", i, f)
		}
		if v.I != i {
			t.Fatalf("frame %d carries push %d: out of order", i, v.I)
		}
	}
	t.Logf("%d pushes, %d dispatched by the mover", sent, sh.inlined.Load())
}

// A device's join must not wait while another subject's subscription is
// being made: in a reconnect storm, hundreds of auths join at once, and
// one registry-wide lock held across nats.go's ChanSubscribe (which
// waits for the connection's lock, taken by every publish) once made
// half the auth workers wait on each other. The subscribe in flight is
// stood for by its stripe's lock, held here.
func TestJoinDoesNotWaitForAnotherSubscribe(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	joined := func(sn string) []string {
		subjs, err := interestsOf(device(sn, "dog", "g1"))
		if err != nil {
			t.Fatal(err)
		}
		return subjs
	}
	// A subject in a stripe that none of the next device's subjects uses
	// (with one lock for every subject, none is: the join then waits).
	next := joined("NEXT")
	var busy *stripe
	for i := range 100 {
		subj, _ := subjects.DevicePush(fmt.Sprintf("BUSY%d", i))
		busy = srv.interest.stripe(subjectHash(subj))
		shared := false
		for _, s := range next {
			shared = shared || srv.interest.stripe(subjectHash(s)) == busy
		}
		if !shared {
			break
		}
	}
	busy.mu.Lock()
	defer busy.mu.Unlock()
	finishWithin(t, 10*time.Second, func() {
		s, _ := attach(t, srv, 1000, device("NEXT", "dog", "g1"))
		s.Close(wire.CloseKicked, "test")
	})
}
