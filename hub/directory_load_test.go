//go:build load

package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDirectoryLatency measures listings at a fleet of 100,000 known
// devices on other nodes (written straight to JetStream: a presence record,
// a hub_presence entry for the online ones (naming node b), a status record each), from a
// node that is not the directory: p50 and p99 of a 1,000-device
// /admin/devices page, of a 1,000-device subscribe snapshot of a group
// (directory) and of 1,000 serial numbers (direct gets alone; its time
// includes subscribing to the 1,000 devices), then how
// long a new directory takes to load when the holder stops. Run it with:
//
//	go test -count=1 -tags load -run TestDirectoryLatency -v -timeout 20m ./hub
//
// DIRECTORY_DEVICES (default 100000) changes the fleet.
func TestDirectoryLatency(t *testing.T) {
	n := 100000
	if v := os.Getenv("DIRECTORY_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	const groups = 100
	ns := natstest.Run(t)
	// A long node TTL: the writes below keep JetStream busy, and the
	// simulated nodes' liveness must not lapse meanwhile.
	cfg := Config{NodeTTL: 2 * time.Minute, ListBytesRate: 1 << 30, ListBytesBurst: 1 << 30}
	a := startNodeServer(t, natstest.Connect(t, ns), "a", cfg)
	natstest.Eventually(t, 10*time.Second, func() error {
		if !isDirectory(a) {
			return fmt.Errorf("a is not the directory yet")
		}
		return nil
	})
	b := startNodeServer(t, natstest.Connect(t, ns), "b", cfg)

	js, err := jetstream.New(natstest.Connect(t, ns), jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		t.Fatal(err)
	}

	sn := func(i int) string { return fmt.Sprintf("L-%07d", i) }
	group := func(i int) string { return "grp-" + strconv.Itoa(i%groups) }
	start := time.Now()
	now := time.Now().UnixMilli()
	for i := range n {
		// The entries name b, a live node that stays, so that nobody
		// reports them lost when a stops; b holds no session of them and
		// leaves them be.
		node := "b"
		online := i%10 != 0
		typ := []string{"dog", "cat", "bin"}[i%3]
		rec := PresenceRecord{SN: sn(i), Type: typ, Group: group(i), Online: online, Reason: ReasonConnected, Node: node, At: now - int64(i)}
		if !online {
			rec.Reason, rec.Node = ReasonClosed, ""
		}
		rb, _ := json.Marshal(rec)
		subj, _ := subjects.Presence(sn(i))
		pub(t, js, subj, rb)
		if online {
			eb, _ := json.Marshal(PresenceEntry{Node: node, Session: "s" + strconv.Itoa(i), Since: now, LastSeen: now, Addr: "127.0.0.1:2", Type: typ, Group: group(i)})
			pub(t, js, subjects.KVKeys(BucketPresence)+sn(i), eb)
		}
		sb, _ := json.Marshal(StatusRecord{SN: sn(i), Type: typ, Group: group(i), At: now, Status: json.RawMessage(`{"electricity":{"code":0,"msg":"ok","percent":87},"location":{"code":0,"msg":"31.2,121.4"}}`)})
		subj, _ = subjects.DeviceStatus(sn(i))
		pub(t, js, subj, sb)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		t.Fatal("writes not acknowledged")
	}
	t.Logf("%d devices written in %v", n, time.Since(start).Round(time.Millisecond))
	natstest.Eventually(t, 2*time.Minute, func() error {
		a.dir.mu.Lock()
		defer a.dir.mu.Unlock()
		if a.dir.idx == nil || len(a.dir.idx.sorted) != n {
			return fmt.Errorf("directory not caught up")
		}
		return nil
	})

	{ // Where a page's time goes.
		var td, tv []time.Duration
		mt := (&listFilter{}).compile([]string{"*"})
		for i := range 50 {
			c := &cursor{Limit: 1000, After: sn((i * 997) % (n - 1000))}
			ctx, cancel := context.WithTimeout(b.runCtx, 10*time.Second)
			began := time.Now()
			es, _, _, werr := b.pageEntries(ctx, mt, c, []string{"*"})
			td = append(td, time.Since(began))
			if werr != nil {
				t.Fatal(werr)
			}
			began = time.Now()
			if _, err := b.deviceViews(ctx, es, nil); err != nil {
				t.Fatal(err)
			}
			tv = append(tv, time.Since(began))
			cancel()
		}
		slices.Sort(td)
		slices.Sort(tv)
		t.Logf("directory page p50=%v p99=%v; views p50=%v p99=%v", td[25], td[49], tv[25], tv[49])
		// 1000 serial numbers alone, read without the directory.
		var ts []time.Duration
		for i := range 50 {
			f := listFilter{Sel: true}
			for k := range 1000 {
				f.SNs = append(f.SNs, sn((i*1000+k*7)%n))
			}
			slices.Sort(f.SNs)
			c := &cursor{Limit: 1000, Filter: f}
			ctx, cancel := context.WithTimeout(b.runCtx, 10*time.Second)
			began := time.Now()
			es, pre, _, werr := b.pageEntries(ctx, f.compile([]string{"*"}), c, []string{"*"})
			if werr != nil {
				t.Fatal(werr)
			}
			if _, err := b.deviceViews(ctx, es, pre); err != nil || len(es) != 1000 {
				t.Fatal(len(es), err)
			}
			ts = append(ts, time.Since(began))
			cancel()
		}
		slices.Sort(ts)
		t.Logf("1000 serials read and viewed (no subscribing) p50=%v p99=%v", ts[25], ts[49])
	}
	adm, ft := attach(t, b, 1000, admin("root", "*"))
	answers := collect(ft)
	seq := 0
	measure := func(name string, rounds int, args func(i int) (string, any), want int) {
		t.Helper()
		var d []time.Duration
		for i := range rounds {
			seq++
			id := strconv.Itoa(seq)
			service, arg := args(i)
			began := time.Now()
			adm.HandleFrame(requestLine(service, id, arg))
			d = append(d, time.Since(began))
			got := answers.await(t, 10*time.Second, id)[id]
			if got.Code != 0 {
				for _, r := range []string{dirNoResponder, dirLoading, dirTimeout, dirBadAnswer, dirViews} {
					t.Logf("unavailable %s: %v", r, testutil.ToFloat64(b.dir.unavailable.WithLabelValues(r)))
				}
				t.Logf("a directory: %v, b directory: %v", isDirectory(a), isDirectory(b))
				t.Fatalf("%s: %d %s", name, got.Code, got.Msg)
			}
			var p devicesPage
			if err := json.Unmarshal(got.Values, &p); err != nil {
				t.Fatal(err)
			}
			if len(p.Devices) != want {
				t.Fatalf("%s: %d devices, want %d", name, len(p.Devices), want)
			}
			if name == "devices" && i == 0 && p.Devices[1].StatusAt == nil {
				t.Fatalf("%s: no status: %+v", name, p.Devices[1])
			}
			delete(answers.got, id)
			if service == "/admin/subscribe" {
				adm.HandleFrame(requestLine("/admin/unsubscribe", "u", arg))
				answers.await(t, 10*time.Second, "u")
				delete(answers.got, "u")
			}
		}
		slices.Sort(d)
		t.Logf("%-28s n=%d p50=%v p99=%v max=%v", name, len(d), d[len(d)/2].Round(10*time.Microsecond),
			d[len(d)*99/100].Round(10*time.Microsecond), d[len(d)-1].Round(10*time.Microsecond))
	}
	rounds := 200
	measure("devices", rounds, func(i int) (string, any) {
		// Pages at every place in the listing: walk by the serial number
		// the page starts after, through a cursor made for it.
		c := &cursor{Limit: 1000, After: sn((i * 997) % (n - 1000))}
		return "/admin/devices", map[string]any{"cursor": b.encodeCursor(c)}
	}, 1000)
	measure("snapshot group", rounds, func(i int) (string, any) {
		return "/admin/subscribe", map[string]any{"groups": []string{group(i)}, "limit": 1000, "topics": []string{"presence"}}
	}, min(1000, n/groups))
	measure("snapshot 1000 serials", rounds, func(i int) (string, any) {
		sns := make([]string, 1000)
		for k := range sns {
			sns[k] = sn((i*1000 + k*7) % n)
		}
		return "/admin/subscribe", map[string]any{"devices": sns, "topics": []string{"status"}}
	}, 1000)

	// The holder stops: how long until b has loaded the fleet and serves.
	stopped := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := a.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, time.Minute, func() error {
		if !isDirectory(b) {
			return fmt.Errorf("b not the directory yet")
		}
		return nil
	})
	t.Logf("holder stopped: b elected and loaded %d devices in %v", n, time.Since(stopped).Round(time.Millisecond))
}

func pub(t *testing.T, js jetstream.JetStream, subj string, data []byte) {
	t.Helper()
	for {
		_, err := js.PublishAsync(subj, data)
		if err == nil {
			return
		}
		if err != jetstream.ErrTooManyStalledMsgs {
			t.Fatal(err)
		}
	}
}
