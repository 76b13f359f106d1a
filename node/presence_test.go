package node_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// Test-sized presence timings.
const (
	testGrace   = 500 * time.Millisecond
	testNodeTTL = time.Second
)

func fastPresence(h *hub.Config, n *nodeConfig) {
	h.OfflineGrace = testGrace
	h.NodeTTL = testNodeTTL
	h.PresenceTTL = 4 * time.Second
}

// recorder collects presence records published on hub.presence.* by any
// node, as a backend sees them.
type recorder struct {
	mu   sync.Mutex
	recs []hub.PresenceRecord
	at   []time.Time
}

func record(t *testing.T, nc *nats.Conn) *recorder {
	t.Helper()
	r := &recorder{}
	if _, err := nc.Subscribe("hub.presence.*", func(m *nats.Msg) {
		var rec hub.PresenceRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Errorf("bad record %s", m.Data)
			return
		}
		r.mu.Lock()
		r.recs = append(r.recs, rec)
		r.at = append(r.at, time.Now())
		r.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *recorder) of(sn string) []hub.PresenceRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []hub.PresenceRecord
	for _, rec := range r.recs {
		if rec.SN == sn {
			out = append(out, rec)
		}
	}
	return out
}

// wait waits for the n-th record of sn and returns it with its arrival.
func (r *recorder) wait(t *testing.T, sn string, n int, timeout time.Duration) (hub.PresenceRecord, time.Time) {
	t.Helper()
	var rec hub.PresenceRecord
	var at time.Time
	natstest.Eventually(t, timeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		k := 0
		for i, x := range r.recs {
			if x.SN == sn {
				k++
				if k == n {
					rec, at = x, r.at[i]
					return nil
				}
			}
		}
		return fmt.Errorf("%d records of %s, want %d", k, sn, n)
	})
	return rec, at
}

func TestPresenceClosed(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t, fastPresence)
	rec := record(t, nc)
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence"}})

	dev := hubtest.Device(t, b, "P-1", "retail")
	on, _ := rec.wait(t, "P-1", 1, 5*time.Second)
	if !on.Online || on.Reason != "connected" || on.Node != "node-b" || on.Type != "retail" || on.Group != "default" {
		t.Fatalf("connected record %+v", on)
	}
	p := admin.Push("/push/presence")
	var pv hub.PresenceRecord
	p.Decode(t, &pv)
	if !pv.Online || pv.SN != "P-1" {
		t.Fatalf("push %s", p.Raw)
	}

	closedAt := time.Now()
	_ = dev.Conn.Close()
	off, at := rec.wait(t, "P-1", 2, 5*time.Second)
	if off.Online || off.Reason != "closed" {
		t.Fatalf("offline record %+v", off)
	}
	if d := at.Sub(closedAt); d > testGrace+time.Second || d < testGrace {
		t.Fatalf("offline after %v, want within grace %v + 1s", d, testGrace)
	}
	admin.Push("/push/presence")
	// Exactly one record per change.
	admin.NoPush("/push/presence", 300*time.Millisecond)
	if n := len(rec.of("P-1")); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
	// The record comes first and the entry's removal right after it; the
	// view has both a moment later.
	natstest.Eventually(t, 5*time.Second, func() error {
		r := admin.MustOK("/admin/devices", nil)
		var dv struct{ Devices []hub.DeviceView }
		r.Decode(t, &dv)
		if len(dv.Devices) != 1 || dv.Devices[0].Online || dv.Devices[0].Node != "" || dv.Devices[0].Since < closedAt.UnixMilli() {
			return fmt.Errorf("devices %s", r.Raw)
		}
		return nil
	})
}

// silentDevice authenticates a device whose client never answers pings.
func silentDevice(t *testing.T, n *hubtest.Node, sn string) *hubtest.Client {
	t.Helper()
	c := hubtest.Dial(t, n.WSURL(), nil)
	c.Conn.SetPingHandler(func(string) error { return nil })
	c.MustOK("/auth/device", hubtest.DeviceArgs(sn, "retail"))
	return c
}

func TestPresenceTimeout(t *testing.T) {
	t.Parallel()
	const pongWait = 600 * time.Millisecond
	a, _, nc := twoNodes(t, fastPresence, func(_ *hub.Config, n *nodeConfig) {
		n.PingInterval, n.PongWait = 200*time.Millisecond, pongWait
	})
	rec := record(t, nc)
	silentDevice(t, a, "P-2")
	_, onAt := rec.wait(t, "P-2", 1, 5*time.Second)
	off, at := rec.wait(t, "P-2", 2, 5*time.Second)
	if off.Online || off.Reason != "timeout" {
		t.Fatalf("offline record %+v", off)
	}
	if d := at.Sub(onAt); d > pongWait+testGrace+1500*time.Millisecond {
		t.Fatalf("timeout reported after %v", d)
	}
}

// TestPresenceNoFalseOffline: a device that comes back within the grace,
// to the same node or to another, or that is replaced, causes no record.
func TestPresenceNoFalseOffline(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t, func(h *hub.Config, n *nodeConfig) {
		fastPresence(h, n)
		h.OfflineGrace = 2 * time.Second
	})
	rec := record(t, nc)
	dev := hubtest.Device(t, a, "P-3", "retail")
	rec.wait(t, "P-3", 1, 5*time.Second)
	for i, n := range []*hubtest.Node{a, b, b, a} {
		_ = dev.Conn.Close()
		dev = hubtest.Device(t, n, "P-3", "retail")
		dev.MustOK("/ping", nil)
		_ = i
	}
	// Replacement: a second session while the first is open.
	second := hubtest.Device(t, b, "P-3", "retail")
	if code := dev.Closed(5 * time.Second); code != 4001 {
		t.Fatalf("replaced with %d", code)
	}
	second.MustOK("/ping", nil)
	// Wait past every grace that was started, then check nothing came.
	time.Sleep(2*time.Second + 500*time.Millisecond)
	if recs := rec.of("P-3"); len(recs) != 1 {
		t.Fatalf("records %+v, want only the first connected", recs)
	}
	// The entry names the last session.
	kv := presenceKV(t, nc)
	e, err := kv.Get(ctxT(t), "P-3")
	if err != nil {
		t.Fatal(err)
	}
	var pe hub.PresenceEntry
	_ = json.Unmarshal(e.Value(), &pe)
	if pe.Node != "node-b" {
		t.Fatalf("entry %+v", pe)
	}
}

func TestPresenceNodeLost(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t, fastPresence)
	rec := record(t, nc)
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"types": []string{"retail"}, "topics": []string{"presence"}})
	var devs []*hubtest.Client
	for i := range 5 {
		devs = append(devs, hubtest.Device(t, b, fmt.Sprintf("L-%d", i), "retail"))
	}
	for i := range 5 {
		rec.wait(t, fmt.Sprintf("L-%d", i), 1, 5*time.Second)
	}
	// Node B dies: it drops off NATS and its sockets break.
	lostAt := time.Now()
	b.NC.Close()
	for _, d := range devs {
		_ = d.Conn.Close()
	}
	for i := range 5 {
		off, at := rec.wait(t, fmt.Sprintf("L-%d", i), 2, 10*time.Second)
		if off.Online || off.Reason != "node_lost" || off.Node != "node-b" {
			t.Fatalf("record %+v", off)
		}
		if d := at.Sub(lostAt); d > testNodeTTL+testGrace+5*time.Second {
			t.Fatalf("node_lost after %v", d)
		}
	}
	// The admin saw each change once: five connected, five node_lost.
	for range 10 {
		admin.Push("/push/presence")
	}
	admin.NoPush("/push/presence", 300*time.Millisecond)
	for i := range 5 {
		if n := len(rec.of(fmt.Sprintf("L-%d", i))); n != 2 {
			t.Fatalf("L-%d: %d records", i, n)
		}
	}
}

func TestPresenceSubscriptions(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t, fastPresence)
	hubtest.PutUser(t, nc, "vic", "pw", "viewer", "g1")
	hubtest.PutDevice(t, nc, "S-g1", "dog", "g1")
	hubtest.PutDevice(t, nc, "S-g2", "dog", "g2")
	var viewer *hubtest.Client
	natstest.Eventually(t, 5*time.Second, func() error {
		c, err := hubtest.TryDial(t, a.WSURL(), nil)
		if err != nil {
			return err
		}
		r := c.Request("/auth/login", map[string]any{"username": "vic", "password": "pw"})
		if r.Code != 0 {
			_ = c.Conn.Close()
			return fmt.Errorf("login: %d", r.Code)
		}
		viewer = c
		return nil
	})
	// The registry reaches node B: the device is told its group.
	var g1 *hubtest.Client
	natstest.Eventually(t, 5*time.Second, func() error {
		c := hubtest.Dial(t, b.WSURL(), nil)
		var v struct{ Group string }
		c.MustOK("/auth/device", hubtest.DeviceArgs("S-g1", "")).Decode(t, &v)
		if v.Group != "g1" {
			_ = c.Conn.Close()
			return fmt.Errorf("group %q", v.Group)
		}
		g1 = c
		return nil
	})
	g2 := hubtest.Device(t, b, "S-g2", "")

	// Outside the viewer's groups: 403; a device may not subscribe at all.
	viewer.MustCode(403, "/admin/subscribe", map[string]any{"groups": []string{"g2"}})
	viewer.MustCode(403, "/admin/subscribe", map[string]any{"devices": []string{"S-g2"}})
	viewer.MustCode(400, "/admin/subscribe", map[string]any{"topics": []string{"presence"}})
	viewer.MustCode(400, "/admin/subscribe", map[string]any{"all": true, "topics": []string{"weather"}})
	g1.MustCode(403, "/admin/subscribe", map[string]any{"all": true})

	// The snapshot holds only what the viewer may see (subscribing again to
	// the same selector changes nothing, so it may be retried until node A's
	// view has the devices that just connected to B).
	natstest.Eventually(t, 5*time.Second, func() error {
		r := viewer.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence"}})
		var snap struct{ Devices []hub.DeviceView }
		r.Decode(t, &snap)
		if len(snap.Devices) != 1 || snap.Devices[0].SN != "S-g1" || !snap.Devices[0].Online || snap.Devices[0].Node != "node-b" || snap.Devices[0].Group != "g1" {
			return fmt.Errorf("snapshot %s", r.Raw)
		}
		return nil
	})
	// Presence of g2 never reaches it; g1's does, once, although two of
	// its subscriptions match.
	viewer.MustOK("/admin/subscribe", map[string]any{"types": []string{"dog"}, "topics": []string{"presence"}})
	_ = g2.Conn.Close()
	_ = g1.Conn.Close()
	p := viewer.Push("/push/presence")
	var rec hub.PresenceRecord
	p.Decode(t, &rec)
	if rec.SN == "S-g1" && rec.Online && rec.Reason == "connected" {
		// The snapshot saw S-g1 online from its entry; its connected
		// record may reach node A's stream consumer only after that, and
		// comes first (records arrive in stream order). Once, as any push.
		p = viewer.Push("/push/presence")
		rec = hub.PresenceRecord{}
		p.Decode(t, &rec)
	}
	if rec.SN != "S-g1" || rec.Online || rec.Reason != "closed" {
		t.Fatalf("push %s", p.Raw)
	}
	viewer.NoPush("/push/presence", testGrace+300*time.Millisecond)

	// Unsubscribing removes exactly what it names.
	viewer.MustOK("/admin/unsubscribe", map[string]any{"all": true})
	again := hubtest.Device(t, b, "S-g1", "")
	viewer.Push("/push/presence") // still subscribed by type
	viewer.MustOK("/admin/unsubscribe", map[string]any{"types": []string{"dog"}, "topics": []string{"presence"}})
	rec2 := record(t, nc)
	_ = again.Conn.Close()
	rec2.wait(t, "S-g1", 1, 5*time.Second)                // the offline record exists...
	viewer.NoPush("/push/presence", 300*time.Millisecond) // ...but is not pushed
	hubtest.Device(t, b, "S-g1", "")

	// /admin/devices filters, within the viewer's groups (node A's view
	// follows the bucket, so it may take a moment to see the new session).
	natstest.Eventually(t, 5*time.Second, func() error {
		r := viewer.MustOK("/admin/devices", map[string]any{"online": true})
		var list struct{ Devices []hub.DeviceView }
		r.Decode(t, &list)
		if len(list.Devices) != 1 || list.Devices[0].SN != "S-g1" {
			return fmt.Errorf("devices %s", r.Raw)
		}
		return nil
	})
}

// TestPresenceKicked: the hub ends a device's session (its registry entry
// changed) and the device does not come back: offline, reason kicked.
func TestPresenceKicked(t *testing.T) {
	t.Parallel()
	a, _, nc := twoNodes(t, fastPresence)
	rec := record(t, nc)
	dev := hubtest.Device(t, a, "P-k", "retail")
	rec.wait(t, "P-k", 1, 5*time.Second)
	hubtest.PutDevice(t, nc, "P-k", "retail", "g7")
	if code := dev.Closed(5 * time.Second); code != 4002 {
		t.Fatalf("closed with %d, want 4002", code)
	}
	off, _ := rec.wait(t, "P-k", 2, 5*time.Second)
	if off.Online || off.Reason != "kicked" {
		t.Fatalf("record %+v", off)
	}
}

// TestPresenceRefreshKeepsEntry: a connected device's entry outlives many
// presence TTLs, refreshed by its node, with no record.
func TestPresenceRefreshKeepsEntry(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	a, _, nc := twoNodes(t, fastPresence, func(h *hub.Config, _ *nodeConfig) { h.PresenceTTL = ttl })
	rec := record(t, nc)
	dev := hubtest.Device(t, a, "P-r", "retail")
	rec.wait(t, "P-r", 1, 5*time.Second)
	kv := presenceKV(t, nc)
	first, err := kv.Get(ctxT(t), "P-r")
	if err != nil {
		t.Fatal(err)
	}
	// Three TTLs: the entry must have been rewritten, never lost.
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if _, err := kv.Get(ctxT(t), "P-r"); err != nil {
			t.Fatalf("entry lost %v before the end: %v", time.Until(deadline), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	last, _ := kv.Get(ctxT(t), "P-r")
	if last.Revision() <= first.Revision()+1 {
		t.Fatalf("entry revision %d → %d: not refreshed", first.Revision(), last.Revision())
	}
	// A refresh moves last_seen and nothing else.
	var was, is hub.PresenceEntry
	if err := json.Unmarshal(first.Value(), &was); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(last.Value(), &is); err != nil {
		t.Fatal(err)
	}
	if is.LastSeen <= was.LastSeen {
		t.Fatalf("last_seen %d → %d", was.LastSeen, is.LastSeen)
	}
	is.LastSeen = was.LastSeen
	if is != was {
		t.Fatalf("refreshed entry %+v, was %+v", is, was)
	}
	if recs := rec.of("P-r"); len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	dev.MustOK("/ping", nil)
}
