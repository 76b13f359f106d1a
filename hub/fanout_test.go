package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

func TestTargetsAndWhere(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	_, d1 := attach(t, srv, 100, device("D1", "dog", "g1"))
	_, d2 := attach(t, srv, 100, device("D2", "cat", "g1"))
	_, d3 := attach(t, srv, 100, device("D3", "dog", "g2"))
	_, a1 := attach(t, srv, 100, admin("alice", "g1"))
	_, a2 := attach(t, srv, 100, admin("root", "*"))
	all := []*fakeTransport{d1, d2, d3, a1, a2}

	tests := []struct {
		to    string
		where map[string]string
		want  []*fakeTransport
	}{
		{"all", nil, all},
		{"sn:D1", nil, []*fakeTransport{d1}},
		{"type:dog", nil, []*fakeTransport{d1, d3}},
		{"group:g1", nil, []*fakeTransport{d1, d2, a1}}, // root's "*" does not name g1
		{"role:admin", nil, []*fakeTransport{a1, a2}},
		{"role:device", nil, []*fakeTransport{d1, d2, d3}},
		{"user:alice", nil, []*fakeTransport{a1}},
		{"all", map[string]string{"type": "dog"}, []*fakeTransport{d1, d3}},
		{"all", map[string]string{"role": "admin", "group": "g1"}, []*fakeTransport{a1}},
		{"group:g1", map[string]string{"type": "cat"}, []*fakeTransport{d2}},
		{"type:dog", map[string]string{"group": "g9"}, nil},
		{"all", map[string]string{"sn": "D3", "group": "g2"}, []*fakeTransport{d3}},
		{"sn:NOPE", nil, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s_%v", tc.to, tc.where), func(t *testing.T) {
			before := make([]int, len(all))
			for i, ft := range all {
				before[i] = ft.count()
			}
			target, err := subjects.ParseTarget(tc.to)
			if err != nil {
				t.Fatal(err)
			}
			subj, _ := target.Subject()
			srv.fanout(subj, target, tc.where, []byte(`{}`))
			for i, ft := range all {
				got := ft.count() - before[i]
				want := 0
				for _, w := range tc.want {
					if w == ft {
						want = 1
					}
				}
				if got != want {
					t.Errorf("session %d got %d frames, want %d", i, got, want)
				}
			}
		})
	}
}

func TestInterestSharedAndDropped(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	s1, _ := attach(t, srv, 10, device("D1", "dog", "g1"))
	s2, _ := attach(t, srv, 10, device("D2", "dog", "g1"))
	typ, _ := subjects.TypePush("dog")
	in := srv.interest.lookup(typ)
	if in == nil || srv.interest.size(typ) != 2 {
		t.Fatalf("type interest missing or not shared")
	}
	if n := srv.nc.NumSubscriptions(); n == 0 {
		t.Fatal("no subscriptions")
	}
	before := srv.nc.NumSubscriptions()
	s1.Gone(ReasonClosed)
	if srv.interest.lookup(typ) != in {
		t.Fatal("interest dropped while a member remains")
	}
	s2.Gone(ReasonClosed)
	if srv.interest.lookup(typ) != nil {
		t.Fatal("interest kept after its last member left")
	}
	// D1 and D2 each had push and cmd; type, group, role and all were
	// shared, and went with the last member.
	if after := srv.nc.NumSubscriptions(); before-after != 2*2+4 {
		t.Fatalf("subscriptions went from %d to %d", before, after)
	}
}

func TestSlowConsumerClosed(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	_, slow := attach(t, srv, 3, device("SLOW", "dog", "g1"))
	_, fast := attach(t, srv, 1000, device("FAST", "dog", "g1"))
	target := subjects.Target{Kind: subjects.KindAll}
	for range 10 {
		srv.fanout(subjects.AllPush, target, nil, []byte(`{}`))
	}
	if slow.closeCode() != 4008 {
		t.Fatalf("slow consumer closed with %d, want 4008", slow.closeCode())
	}
	if fast.count() != 10 || fast.closeCode() != 0 {
		t.Fatalf("fast session got %d frames, closed %d", fast.count(), fast.closeCode())
	}
	natstest.Eventually(t, 2*time.Second, func() error {
		if n := srv.SessionCount(); n != 1 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
}

func TestPushFromNATSEncodedOnce(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	_, a := attach(t, srv, 100, device("D1", "dog", "g1"))
	_, b := attach(t, srv, 100, device("D2", "dog", "g1"))
	body, _ := json.Marshal(schema.PushBody{Service: "/push/x", Values: json.RawMessage("{\n  \"k\": 1\n}")})
	if err := srv.nc.Publish("hub.all.push", body); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 2*time.Second, func() error {
		if a.count() != 1 || b.count() != 1 {
			return fmt.Errorf("got %d and %d", a.count(), b.count())
		}
		return nil
	})
	fa, fb := a.frames[0], b.frames[0]
	if &fa[0] != &fb[0] {
		t.Fatal("push encoded per session, want once per push")
	}
	if strings.Contains(string(fa), "\n") || !strings.Contains(string(fa), `"values":{"k":1}`) {
		t.Fatalf("frame not one compact line: %q", fa)
	}
}

// BenchmarkFanout measures the hub's own cost of one push to every local
// session (frame shared, queued by a counting transport): the per-delivery
// cost before any socket write.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			srv := newTestServer(b)
			var fts []*fakeTransport
			for i := range n {
				_, ft := attach(b, srv, -1, device(fmt.Sprintf("D%d", i), "dog", "g1"))
				fts = append(fts, ft)
			}
			frame := []byte(`{"op":"push","service":"/push/x","id":"1","values":{}}`)
			target := subjects.Target{Kind: subjects.KindAll}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				srv.fanout(subjects.AllPush, target, nil, frame)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
			if fts[n-1].sent.Load() != int64(b.N) {
				b.Fatalf("last session got %d of %d", fts[n-1].sent.Load(), b.N)
			}
		})
	}
}

// BenchmarkDispatchUnicast measures one backend push to one device, as a
// shard dispatches it: decode, check, encode and queue to a counting
// transport. The payload has the shape and size of the load tool's
// (../shared/bench).
func BenchmarkDispatchUnicast(b *testing.B) {
	srv := newTestServer(b)
	_, ft := attach(b, srv, -1, device("D1", "dog", "g1"))
	subj, _ := subjects.DevicePush("D1")
	data := []byte(`{"service":"/push/bench","values":{"t":1764625000000000000,"s":12345,"p":"` +
		strings.Repeat("x", 128-len(`{"t":1764625000000000000,"s":12345,"p":""}`)) + `"}}`)
	m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	in := srv.interest.lookup(subj)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		srv.dispatchRoute(&in.route, m)
	}
	b.StopTimer()
	if ft.sent.Load() != int64(b.N) {
		b.Fatalf("device got %d of %d", ft.sent.Load(), b.N)
	}
}

// signalTransport is a transport that tells each Send on a channel.
type signalTransport struct{ sent chan struct{} }

func (s *signalTransport) Send([]byte) error { s.sent <- struct{}{}; return nil }
func (s *signalTransport) Close(int, string) {}

// BenchmarkPushThroughShard measures one backend push to one device from
// its publish on NATS to the device's Send, one at a time: nats.go's
// reader, the shard and the dispatch, with every goroutine wake-up on the
// way (the CPU per push shows beside it as cpu-ns/op).
func BenchmarkPushThroughShard(b *testing.B) {
	ns := natstest.Run(b)
	srv := startTestServer(b, natstest.Connect(b, ns), Config{})
	st := &signalTransport{sent: make(chan struct{}, 1)}
	s := srv.Open(st, "test")
	if werr := srv.establish(context.Background(), s, &Identity{Role: "device", SN: "D1", Type: "dog", Group: "g1", AuthAt: time.Now()}, true); werr != nil {
		b.Fatal(werr)
	}
	pub := natstest.Connect(b, ns)
	subj, _ := subjects.DevicePush("D1")
	data := []byte(`{"service":"/push/bench","values":{"t":1764625000000000000,"s":12345,"p":"` +
		strings.Repeat("x", 128-len(`{"t":1764625000000000000,"s":12345,"p":""}`)) + `"}}`)
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := pub.Publish(subj, data); err != nil {
			b.Fatal(err)
		}
		select {
		case <-st.sent:
		case <-time.After(10 * time.Second):
			b.Fatal("push not delivered")
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}
