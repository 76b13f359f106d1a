package node_test

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

func TestStatusAcrossNodes(t *testing.T) {
	t.Parallel()
	a, b, _ := twoNodes(t, fastPresence, func(h *hub.Config, _ *nodeConfig) { h.CoalesceWindow, h.StatusBurst = time.Millisecond, 100 })
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	dev := hubtest.Device(t, b, "D-1", "retail")
	admin.MustOK("/admin/subscribe", map[string]any{"devices": []string{"D-1"}, "topics": []string{"status"}})

	// The device reports for another serial number: the hub's own wins.
	st := map[string]any{"sn": "OTHER", "at": 1, "location": map[string]any{"code": 0, "msg": "ok", "x": 1.5},
		"electricity": map[string]any{"code": 0, "msg": "", "percent": 87}, "custom": "kept"}
	dev.MustOK("/device/status", st)
	p := admin.Push("/push/status")
	var rec hub.StatusRecord
	p.Decode(t, &rec)
	if rec.SN != "D-1" || rec.Type != "retail" || rec.Group != "default" || rec.At == 0 {
		t.Fatalf("record %s", p.Raw)
	}
	var body map[string]any
	_ = json.Unmarshal(rec.Status, &body)
	if _, ok := body["sn"]; ok || body["custom"] != "kept" || body["electricity"].(map[string]any)["percent"].(float64) != 87 {
		t.Fatalf("status %s", rec.Status)
	}
	// In order, end to end.
	for i := range 20 {
		dev.MustOK("/device/status", map[string]any{"seq": i})
	}
	last := -1
	for last < 19 {
		p := admin.Push("/push/status")
		var r struct {
			Status struct{ Seq int }
		}
		p.Decode(t, &r)
		if r.Status.Seq <= last {
			t.Fatalf("status %d after %d", r.Status.Seq, last)
		}
		last = r.Status.Seq
	}
	// The snapshot carries the last status; so do views and history.
	r := admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence"}})
	var snap struct{ Devices []hub.DeviceView }
	r.Decode(t, &snap)
	if len(snap.Devices) != 1 || !strings.Contains(string(snap.Devices[0].Status), `"seq":19`) || snap.Devices[0].StatusAt == nil {
		t.Fatalf("snapshot %s", r.Raw)
	}
	h := admin.MustOK("/admin/history", map[string]any{"sn": "D-1", "topic": "status", "limit": 3})
	var hist struct{ Records []hub.StatusRecord }
	h.Decode(t, &hist)
	if len(hist.Records) != 3 || !strings.Contains(string(hist.Records[0].Status), `"seq":19`) || !strings.Contains(string(hist.Records[2].Status), `"seq":17`) {
		t.Fatalf("history %s", h.Raw)
	}
	ph := admin.MustOK("/admin/history", map[string]any{"sn": "D-1", "topic": "presence"})
	var phist struct{ Records []hub.PresenceRecord }
	ph.Decode(t, &phist)
	if len(phist.Records) != 1 || !phist.Records[0].Online {
		t.Fatalf("presence history %s", ph.Raw)
	}
}

func TestStatusBadInput(t *testing.T) {
	t.Parallel()
	a, _, nc := twoNodes(t, fastPresence, func(h *hub.Config, _ *nodeConfig) { h.MaxRecordBytes = 1024 })
	dev := hubtest.Device(t, a, "D-2", "retail")
	dev.MustCode(400, "/device/status", map[string]any{"location": "here"})
	dev.MustCode(400, "/device/status", map[string]any{"electricity": map[string]any{"code": "full"}})
	dev.MustCode(400, "/device/status", map[string]any{"inspection": map[string]any{"msg": 3}})
	dev.MustCode(413, "/device/status", map[string]any{"pad": strings.Repeat("x", 2000)})
	dev.MustCode(400, "/device/event", map[string]any{"event": "fall", "priority": "urgent"})
	dev.MustCode(400, "/device/event", map[string]any{"priority": "high"})
	dev.MustCode(400, "/device/event", map[string]any{"event": "fall", "data": []int{1}})
	dev.MustCode(400, "/device/event", map[string]any{"event": 7})
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustCode(403, "/device/status", map[string]any{})
	admin.MustCode(400, "/admin/history", map[string]any{"sn": "D-2", "limit": 0})
	admin.MustCode(400, "/admin/history", map[string]any{"sn": "D-2", "limit": 1001})
	admin.MustCode(400, "/admin/history", map[string]any{"sn": "D-2", "topic": "weather"})
	admin.MustCode(404, "/admin/history", map[string]any{"sn": "NEVER-SEEN"})
	// History of a device outside the caller's groups: 403.
	hubtest.PutUser(t, nc, "g1admin", "pw", "admin", "g1")
	var g1 *hubtest.Client
	natstest.Eventually(t, 5*time.Second, func() error {
		c, err := hubtest.TryDial(t, a.WSURL(), nil)
		if err != nil {
			return err
		}
		if r := c.Request("/auth/login", map[string]any{"username": "g1admin", "password": "pw"}); r.Code != 0 {
			return fmt.Errorf("login %d", r.Code)
		}
		g1 = c
		return nil
	})
	g1.MustCode(403, "/admin/history", map[string]any{"sn": "D-2"})
	g1.MustCode(403, "/admin/command", map[string]any{"sn": "D-2", "service": "/cmd/x", "timeout_ms": 500})
	dev.MustOK("/ping", nil)
}

func TestEventsPriorityAndStorm(t *testing.T) {
	t.Parallel()
	a, b, _ := twoNodes(t, fastPresence, func(h *hub.Config, _ *nodeConfig) {
		h.EventRate, h.EventBurst = 1, 5
		h.UrgentRate, h.UrgentBurst = 1, 50
		h.StatusRate, h.StatusBurst = 1, 5
	})
	all := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	urgent := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	all.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"event"}})
	urgent.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"event"}, "min_priority": "high"})
	dev := hubtest.Device(t, b, "D-3", "dance_dog")

	// A spamming device: normal events beyond the burst get 429...
	limited := 0
	for range 20 {
		r := dev.Request("/device/event", map[string]any{"event": "chatter", "data": map[string]any{}})
		if r.Code == 429 {
			limited++
		} else if r.Code != 0 {
			t.Fatalf("event: %s", r.Raw)
		}
	}
	if limited < 10 {
		t.Fatalf("only %d of 20 normal events limited", limited)
	}
	// ...but its emergencies still go through and reach both admins.
	for i := range 10 {
		dev.MustOK("/device/event", map[string]any{"event": "fall", "priority": "emergency", "data": map[string]any{"n": i}})
	}
	for i := range 10 {
		p := urgent.Push("/push/event")
		var e hub.EventRecord
		p.Decode(t, &e)
		if e.Priority != "emergency" || e.SN != "D-3" || e.Type != "dance_dog" || !strings.Contains(string(e.Data), fmt.Sprintf(`"n":%d`, i)) {
			t.Fatalf("urgent got %s", p.Raw)
		}
	}
	urgent.NoPush("/push/event", 200*time.Millisecond) // no normal ones
	n := 0
	for {
		if _, ok := all.TryPush("/push/event", 500*time.Millisecond); !ok {
			break
		}
		n++
	}
	if n != 20-limited+10 {
		t.Fatalf("all-events admin got %d pushes, want %d", n, 20-limited+10)
	}
	// Status reports are limited too.
	codes := map[int]int{}
	for range 15 {
		codes[dev.Request("/device/status", map[string]any{}).Code]++
	}
	if codes[429] == 0 || codes[0] == 0 {
		t.Fatalf("status codes %v", codes)
	}
}

func TestStatusCoalesced(t *testing.T) {
	t.Parallel()
	a, b, _ := twoNodes(t, fastPresence, func(h *hub.Config, _ *nodeConfig) {
		h.StatusRate, h.StatusBurst = 1000, 1000
		h.CoalesceWindow = 300 * time.Millisecond
	})
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"status"}})
	dev := hubtest.Device(t, b, "D-4", "retail")
	const total = 200
	for i := range total {
		id := dev.NextID()
		dev.Send(hubtest.RequestFrame("/device/status", id, map[string]any{"seq": i}))
		if r := dev.Response(id); r.Code != 0 {
			t.Fatalf("status %d: %s", i, r.Raw)
		}
	}
	// The last one always arrives; far fewer pushes than reports.
	got := 0
	for {
		p, ok := admin.TryPush("/push/status", time.Second)
		if !ok {
			t.Fatalf("last status never pushed (got %d pushes)", got)
		}
		got++
		if strings.Contains(p.Raw, fmt.Sprintf(`"seq":%d`, total-1)) {
			break
		}
	}
	t.Logf("%d status reports, %d pushes", total, got)
	if got >= total/2 {
		t.Fatalf("%d pushes for %d reports: not coalesced", got, total)
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	a, _, nc := twoNodes(t, fastPresence, func(h *hub.Config, _ *nodeConfig) { h.SummaryInterval = 200 * time.Millisecond })
	hubtest.PutDevice(t, nc, "Y-reg", "rubbish", "g1") // registered, never seen: offline
	hubtest.Device(t, a, "Y-on", "retail")
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"summary"}})
	natstest.Eventually(t, 5*time.Second, func() error {
		p := admin.Push("/push/summary")
		var s hub.Summary
		p.Decode(t, &s)
		if s.Online != 1 || s.Offline != 1 || s.ByType["retail"].Online != 1 || s.ByType["rubbish"].Offline != 1 || s.ByGroup["g1"].Offline != 1 || s.ByGroup["default"].Online != 1 {
			return fmt.Errorf("summary %s", p.Raw)
		}
		return nil
	})
	admin.MustOK("/admin/unsubscribe", map[string]any{"all": true, "topics": []string{"summary"}})
	// Drain what was already queued, then nothing more.
	for {
		if _, ok := admin.TryPush("/push/summary", 500*time.Millisecond); !ok {
			break
		}
	}
}

// TestJetStreamOutage: while NATS and its JetStream are away (the server
// restarts), reports get 503 and the device is told so; every report that
// was acknowledged is stored.
func TestJetStreamOutage(t *testing.T) {
	t.Parallel()
	ns := natstest.RunAt(t, natstest.RestartablePort(t), t.TempDir()) // restarted below
	n := hubtest.StartNode(t, ns, "n1", fastPresence, func(h *hub.Config, _ *nodeConfig) { h.StatusBurst = 1000 })
	dev := hubtest.Device(t, n, "J-1", "retail")
	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	acked := map[int]bool{}
	send := func(i int) int {
		r := dev.Request("/device/status", map[string]any{"seq": i})
		if r.Code == 0 {
			acked[i] = true
		}
		return r.Code
	}
	for i := range 10 {
		if code := send(i); code != 0 {
			t.Fatalf("before the outage: %d", code)
		}
	}
	dir := ns.JetStreamConfig().StoreDir
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	refused := 0
	for i := 10; i < 15; i++ {
		switch code := send(i); code {
		case 503:
			refused++
		case 0:
		default:
			t.Fatalf("during the outage: code %d", code)
		}
	}
	if refused == 0 {
		t.Fatal("no report was refused while JetStream was away")
	}
	natstest.RunAt(t, port, filepath.Dir(dir))
	natstest.Eventually(t, 10*time.Second, func() error {
		if code := send(100); code != 0 {
			return fmt.Errorf("after the outage: %d", code)
		}
		return nil
	})
	h := admin.MustOK("/admin/history", map[string]any{"sn": "J-1", "limit": 1000})
	var hist struct{ Records []hub.StatusRecord }
	h.Decode(t, &hist)
	stored := map[int]bool{}
	for _, r := range hist.Records {
		var s struct{ Seq int }
		_ = json.Unmarshal(r.Status, &s)
		stored[s.Seq] = true
	}
	for i := range acked {
		if !stored[i] {
			t.Fatalf("acknowledged status %d is not stored (stored %v)", i, stored)
		}
	}
	t.Logf("%d acknowledged, %d refused with 503, all acknowledged stored", len(acked), refused)
}

func TestRequireRegistered(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(h *hub.Config, _ *nodeConfig) { h.RequireRegistered = true })
	nc := natstest.Connect(t, ns)
	c := hubtest.Dial(t, n.WSURL(), nil)
	if r := c.MustCode(401, "/auth/device", hubtest.DeviceArgs("R-unreg", "retail")); !strings.Contains(r.Msg, "not registered") {
		t.Fatalf("msg %q", r.Msg)
	}
	hubtest.PutDevice(t, nc, "R-reg", "dance_robot", "sh-01")
	natstest.Eventually(t, 5*time.Second, func() error {
		c := hubtest.Dial(t, n.WSURL(), nil)
		defer c.Conn.Close()
		r := c.Request("/auth/device", hubtest.DeviceArgs("R-reg", "ignored"))
		if r.Code != 0 {
			return fmt.Errorf("code %d", r.Code)
		}
		var v struct{ Type, Group string }
		r.Decode(t, &v)
		if v.Type != "dance_robot" || v.Group != "sh-01" {
			t.Fatalf("registered device got %s", r.Raw)
		}
		return nil
	})
}
