package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// isDirectory reports whether srv holds the directory and has loaded it.
func isDirectory(srv *Server) bool {
	srv.dir.mu.Lock()
	defer srv.dir.mu.Unlock()
	return srv.dir.idx != nil && srv.dir.ready
}

// call sends one request on a session and waits for its answer.
func call(t *testing.T, s *Session, answers *collector, id, service string, args any) answer {
	t.Helper()
	s.HandleFrame(requestLine(service, id, args))
	return answers.await(t, 10*time.Second, id)[id]
}

type devicesPage struct {
	Devices []DeviceView `json:"devices"`
	Next    *string      `json:"next"`
}

func decodePage(t *testing.T, a answer) devicesPage {
	t.Helper()
	if a.Code != 0 {
		t.Fatalf("listing: %d %s", a.Code, a.Msg)
	}
	var p devicesPage
	if err := json.Unmarshal(a.Values, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Two nodes on one NATS, the devices on B, the admin on A: /admin/devices,
// subscribe snapshots (of a group, and of serial numbers) and the summary
// on A show B's devices with their status, node and presence, though A
// holds none of them and keeps no view of them.
func TestDirectoryTwoNodes(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	a := startNodeServer(t, natstest.Connect(t, ns), "a", Config{})
	natstest.Eventually(t, 10*time.Second, func() error {
		if !isDirectory(a) {
			return fmt.Errorf("a is not the directory yet")
		}
		return nil
	})
	b := startNodeServer(t, natstest.Connect(t, ns), "b", Config{})
	for i := range 6 {
		typ := []string{"dog", "cat"}[i%2]
		dev, ft := connectDevice(t, b, fmt.Sprintf("D-%d", i), typ, "g1")
		if i < 3 {
			dev.HandleFrame(requestLine("/device/status", "s", map[string]any{"seq": i}))
			if got := collect(ft).await(t, 10*time.Second, "s")["s"]; got.Code != 0 {
				t.Fatalf("status: %d %s", got.Code, got.Msg)
			}
		}
		if i == 5 {
			dev.Close(1000, "bye")
		}
	}
	hubtestPutDevice(t, b, "D-reg", "rubbish", "g2") // registered, never seen
	if isDirectory(b) {
		t.Fatal("b took the directory while a holds it")
	}

	adm, ft := attach(t, a, 1000, admin("root", "*"))
	answers := collect(ft)
	seq := 0
	next := func() string { seq++; return fmt.Sprint(seq) }
	// D-5's offline record comes after its grace.
	natstest.Eventually(t, 20*time.Second, func() error {
		p := decodePage(t, call(t, adm, answers, next(), "/admin/devices", nil))
		if len(p.Devices) != 6 {
			return fmt.Errorf("%d devices", len(p.Devices))
		}
		for _, d := range p.Devices {
			if d.SN == "D-5" && d.Online {
				return fmt.Errorf("D-5 still online")
			}
		}
		return nil
	})
	p := decodePage(t, call(t, adm, answers, next(), "/admin/devices", nil))
	for i, d := range p.Devices {
		want := fmt.Sprintf("D-%d", i)
		if d.SN != want || d.Group != "g1" || d.Type != []string{"dog", "cat"}[i%2] {
			t.Errorf("device %d: %+v, want %s", i, d, want)
		}
		if online := i != 5; d.Online != online || online && (d.Node != "b" || d.Since == 0 || d.LastSeen < d.Since) || !online && (d.Node != "" || d.Since == 0) {
			t.Errorf("%s: online %v node %q since %d last_seen %d", d.SN, d.Online, d.Node, d.Since, d.LastSeen)
		}
		if withStatus := i < 3; (d.StatusAt != nil) != withStatus || withStatus && !strings.Contains(string(d.Status), fmt.Sprintf(`"seq":%d`, i)) {
			t.Errorf("%s: status %s at %v", d.SN, d.Status, d.StatusAt)
		}
	}
	// Filters.
	if p := decodePage(t, call(t, adm, answers, next(), "/admin/devices", map[string]any{"type": "cat", "online": true})); len(p.Devices) != 2 {
		t.Errorf("online cats: %d devices, want 2 (D-1, D-3)", len(p.Devices))
	}
	// Snapshots: a group, paged; serial numbers alone (read without the
	// directory), one of them unknown.
	snap := decodePage(t, call(t, adm, answers, next(), "/admin/subscribe", map[string]any{"groups": []string{"g1"}, "limit": 4, "topics": []string{"presence"}}))
	if len(snap.Devices) != 4 || snap.Next == nil {
		t.Fatalf("group snapshot: %d devices, next %v", len(snap.Devices), snap.Next)
	}
	rest := decodePage(t, call(t, adm, answers, next(), "/admin/devices", map[string]any{"cursor": *snap.Next}))
	if len(rest.Devices) != 2 || rest.Devices[0].SN != "D-4" || rest.Next != nil {
		t.Errorf("rest of the group snapshot: %+v", rest)
	}
	snap = decodePage(t, call(t, adm, answers, next(), "/admin/subscribe", map[string]any{"devices": []string{"D-2", "D-5", "Z-none"}, "topics": []string{"status"}}))
	if len(snap.Devices) != 2 || snap.Devices[0].SN != "D-2" || !snap.Devices[0].Online || snap.Devices[0].Node != "b" ||
		snap.Devices[0].StatusAt == nil || snap.Devices[1].SN != "D-5" || snap.Devices[1].Online || snap.Devices[1].Since == 0 {
		t.Errorf("serial numbers snapshot: %+v", snap.Devices)
	}
	// A viewer of g2 sees none of them.
	view, vft := attach(t, a, 1000, &Identity{Role: "viewer", User: "v", Groups: []string{"g2"}})
	if p := decodePage(t, call(t, view, collect(vft), "v1", "/admin/devices", nil)); len(p.Devices) != 0 {
		t.Errorf("viewer of g2: %d devices", len(p.Devices))
	}
	// The summary counts the registered device as offline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	natstest.Eventually(t, 10*time.Second, func() error {
		sum, werr := a.summarize(ctx, []string{"*"}, time.Now())
		if werr != nil {
			return werr
		}
		if sum.Online != 5 || sum.Offline != 2 || sum.ByType["dog"] != (Counts{Online: 3, Offline: 0}) || sum.ByType["cat"] != (Counts{Online: 2, Offline: 1}) ||
			sum.ByGroup["g2"] != (Counts{Online: 0, Offline: 1}) || sum.ByType["rubbish"] != (Counts{Online: 0, Offline: 1}) {
			return fmt.Errorf("summary %+v", sum)
		}
		return nil
	})
	sum, werr := a.summarize(ctx, []string{"g2"}, time.Now())
	if werr != nil || sum.Online != 0 || sum.Offline != 1 || len(sum.ByGroup) != 1 {
		t.Errorf("summary for g2: %+v %v", sum, werr)
	}
}

// hubtestPutDevice writes a registry entry.
func hubtestPutDevice(t *testing.T, srv *Server, sn, typ, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, _ := json.Marshal(schema.Device{Type: typ, Group: group})
	if _, err := srv.registry.kv.Put(ctx, sn, b); err != nil {
		t.Fatal(err)
	}
}

// The directory moves: when its holder stops, another node serves within
// a few seconds (it gives the lease up); when its holder dies (its
// connection cut, no lease given up), once the lease has expired.
func TestDirectoryFailover(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	cfg := Config{NodeTTL: time.Second}
	a := startNodeServer(t, natstest.Connect(t, ns), "a", cfg)
	natstest.Eventually(t, 10*time.Second, func() error {
		if !isDirectory(a) {
			return fmt.Errorf("a is not the directory yet")
		}
		return nil
	})
	bConn := natstest.Connect(t, ns)
	b := startNodeServer(t, bConn, "b", cfg)
	connectDevice(t, b, "F-1", "dog", "g1")
	seq := 0
	lists := func(srv *Server) func() error {
		adm, ft := attach(t, srv, 1000, admin("root", "*"))
		answers := collect(ft)
		return func() error {
			seq++
			a := call(t, adm, answers, fmt.Sprint(seq), "/admin/devices", nil)
			if a.Code != 0 {
				return fmt.Errorf("%d %s", a.Code, a.Msg)
			}
			var p devicesPage
			_ = json.Unmarshal(a.Values, &p)
			if len(p.Devices) != 1 || p.Devices[0].SN != "F-1" {
				return fmt.Errorf("%d devices", len(p.Devices))
			}
			return nil
		}
	}
	onB := lists(b)
	natstest.Eventually(t, 10*time.Second, onB)

	// The holder stops: b takes over.
	stopped := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if !isDirectory(b) {
			return fmt.Errorf("b is not the directory")
		}
		return onB()
	})
	t.Logf("holder stopped: served again after %v", time.Since(stopped).Round(time.Millisecond))

	// b dies (its connection cut: it gives nothing up): c takes over once
	// the lease has expired.
	c := startNodeServer(t, natstest.Connect(t, ns), "c", cfg)
	onC := lists(c)
	if err := onC(); err != nil {
		t.Fatal(err)
	}
	if isDirectory(c) {
		t.Fatal("c took the directory while b holds it")
	}
	killed := time.Now()
	bConn.Close()
	natstest.Eventually(t, 10*time.Second, func() error {
		if !isDirectory(c) {
			return fmt.Errorf("c is not the directory")
		}
		return onC()
	})
	t.Logf("holder's connection cut: served again after %v (lease TTL %v)", time.Since(killed).Round(time.Millisecond), cfg.NodeTTL)
}

// With no directory answering (the lease held by a node that serves
// nothing), a listing is 503 with a clear message, counted; a snapshot of
// serial numbers alone is still answered.
func TestDirectoryUnavailable(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t, natstest.Run(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const ttl = 2 * time.Second
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schema.BucketRoles, History: 1, TTL: ttl, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, dirLeaseKey, []byte("elsewhere"))
	if err != nil {
		t.Fatal(err)
	}
	// The holder keeps its lease and answers nothing.
	hold, release := context.WithCancel(ctx)
	held := make(chan uint64)
	go func() {
		tick := time.NewTicker(ttl / 4)
		defer tick.Stop()
		for {
			select {
			case <-hold.Done():
				held <- rev
				return
			case <-tick.C:
				if r, err := kv.Update(hold, dirLeaseKey, []byte("elsewhere"), rev); err == nil {
					rev = r
				}
			}
		}
	}()
	srv := startTestServer(t, nc, Config{NodeTTL: ttl})
	connectDevice(t, srv, "U-1", "dog", "g1")
	adm, ft := attach(t, srv, 1000, admin("root", "*"))
	answers := collect(ft)
	got := call(t, adm, answers, "1", "/admin/devices", nil)
	if got.Code != 503 || !strings.Contains(got.Msg, "directory") {
		t.Errorf("listing without a directory: %d %q, want 503 naming the directory", got.Code, got.Msg)
	}
	if n := testutil.ToFloat64(srv.dir.unavailable.WithLabelValues(dirNoResponder)); n != 1 {
		t.Errorf("no_directory counted %v times, want 1", n)
	}
	if _, werr := srv.summarize(ctx, []string{"*"}, time.Now()); werr == nil || werr.Code != 503 {
		t.Errorf("summary without a directory: %v, want 503", werr)
	}
	if got := call(t, adm, answers, "2", "/admin/subscribe", map[string]any{"devices": []string{"U-1"}}); got.Code != 0 || !strings.Contains(string(got.Values), `"sn":"U-1"`) {
		t.Errorf("serial numbers snapshot without a directory: %d %s %s", got.Code, got.Msg, got.Values)
	}
	// A snapshot that needs the directory: the subscription holds, the
	// listing is left to /admin/devices.
	got = call(t, adm, answers, "2b", "/admin/subscribe", map[string]any{"groups": []string{"g1"}})
	var deferred devicesPage
	if err := json.Unmarshal(got.Values, &deferred); got.Code != 0 || err != nil || len(deferred.Devices) != 0 || deferred.Next == nil {
		t.Errorf("group snapshot without a directory: %d %s %s, want no device and a next", got.Code, got.Msg, got.Values)
	}
	adm.mu.Lock()
	_, subscribed := adm.subs["group:g1"]
	adm.mu.Unlock()
	if !subscribed {
		t.Error("group snapshot without a directory: not subscribed")
	}
	// Once the lease goes, this node takes it and answers.
	release()
	if err := kv.Delete(ctx, dirLeaseKey, jetstream.LastRevision(<-held)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		got := call(t, adm, answers, fmt.Sprint("3-", time.Now().UnixNano()), "/admin/devices", nil)
		if got.Code != 0 || !strings.Contains(string(got.Values), `"sn":"U-1"`) {
			return fmt.Errorf("%d %s %s", got.Code, got.Msg, got.Values)
		}
		return nil
	})
}

// knownViews lists every known device as a listing sees it: from the
// directory, completed by direct gets.
func knownViews(srv *Server) ([]DeviceView, error) {
	ctx, cancel := context.WithTimeout(srv.runCtx, 10*time.Second)
	defer cancel()
	var views []DeviceView
	req := dirListRequest{Filter: listFilter{}, Groups: []string{"*"}, Limit: maxListLimit}
	for {
		r, werr := srv.askDirectory(ctx, subjects.DirList, &req)
		if werr != nil {
			return nil, werr
		}
		vs, err := srv.deviceViews(ctx, r.D, nil)
		if err != nil {
			return nil, err
		}
		views = append(views, vs...)
		if !r.More || len(r.D) == 0 {
			return views, nil
		}
		req.After = r.D[len(r.D)-1].SN
	}
}
