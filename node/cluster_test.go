package node_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// twoNodes starts two nodes on one NATS server.
func twoNodes(t *testing.T, opts ...hubtest.Option) (*hubtest.Node, *hubtest.Node, *nats.Conn) {
	t.Helper()
	ns := natstest.Run(t)
	a := hubtest.StartNode(t, ns, "node-a", opts...)
	b := hubtest.StartNode(t, ns, "node-b", opts...)
	return a, b, natstest.Connect(t, ns)
}

func publish(t *testing.T, nc *nats.Conn, subject string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	if err := nc.Publish(subject, b); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestCrossNodePushAndCommand(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t)
	dev := hubtest.Device(t, b, "R-100", "dance_dog")
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)

	// An admin on node A pushes to a device on node B.
	r := admin.MustOK("/admin/push", map[string]any{"target": map[string]any{"sn": "R-100"}, "service": "/push/x", "values": map[string]any{"n": 1}})
	var id struct{ ID string }
	r.Decode(t, &id)
	if p := dev.Push("/push/x"); p.ID != id.ID {
		t.Fatalf("push id %q, want %q", p.ID, id.ID)
	}

	// A backend pushes by type; where narrows by group.
	publish(t, nc, "hub.type.dance_dog.push", map[string]any{"service": "/push/type", "values": map[string]any{}})
	dev.Push("/push/type")
	publish(t, nc, "hub.all.push", map[string]any{"service": "/push/where", "where": map[string]string{"group": "elsewhere"}})
	publish(t, nc, "hub.all.push", map[string]any{"service": "/push/where2", "where": map[string]string{"group": "default", "role": "device"}})
	dev.Push("/push/where2")
	dev.NoPush("/push/where", 100*time.Millisecond)
	admin.NoPush("/push/where2", 100*time.Millisecond)

	// The admin commands the device across nodes.
	go func() {
		req := dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == "/cmd/dance" })
		dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{"ok":"yes"}}`)
	}()
	res := admin.MustOK("/admin/command", map[string]any{"sn": "R-100", "service": "/cmd/dance", "timeout_ms": 3000})
	if string(res.Values) != `{"ok":"yes"}` {
		t.Fatalf("command answer %s", res.Raw)
	}

	// A device's own failure is passed through with its code, msg and values.
	go func() {
		req := dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == "/cmd/jump" })
		dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":409,"result":false,"msg":"busy dancing","values":{"eta_s":3}}`)
	}()
	res = admin.MustCode(409, "/admin/command", map[string]any{"sn": "R-100", "service": "/cmd/jump"})
	if res.Msg != "busy dancing" || string(res.Values) != `{"eta_s":3}` {
		t.Fatalf("device failure not passed through: %s", res.Raw)
	}
}

func TestReplacementAcrossNodes(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t)
	first := hubtest.Device(t, a, "R-200", "retail")
	second := hubtest.Device(t, b, "R-200", "retail")
	if code := first.Closed(5 * time.Second); code != 4001 {
		t.Fatalf("first session closed with %d, want 4001", code)
	}
	second.MustOK("/ping", nil)
	// Pushes and commands now reach only the newer session.
	publish(t, nc, "hub.dev.R-200.push", map[string]any{"service": "/push/after"})
	second.Push("/push/after")
	natstest.Eventually(t, 5*time.Second, func() error {
		if a.Hub.SessionCount() != 0 {
			return errorf("node A still holds %d sessions", a.Hub.SessionCount())
		}
		return nil
	})

	// And on the same node.
	third := hubtest.Device(t, b, "R-200", "retail")
	if code := second.Closed(5 * time.Second); code != 4001 {
		t.Fatalf("second session closed with %d, want 4001", code)
	}
	third.MustOK("/ping", nil)
}

func TestBackendService(t *testing.T) {
	t.Parallel()
	a, _, nc := twoNodes(t)
	sub, err := nc.Subscribe("hub.svc.map.route", func(m *nats.Msg) {
		h := m.Header
		values := map[string]any{
			"session": h.Get("Hub-Session"), "role": h.Get("Hub-Role"), "node": h.Get("Hub-Node"),
			"sn": h.Get("Hub-Sn"), "user": h.Get("Hub-User"), "group": h.Get("Hub-Group"), "args": json.RawMessage(m.Data),
		}
		b, _ := json.Marshal(map[string]any{"code": 0, "msg": "", "values": values})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Subscribe("hub.svc.slow", func(*nats.Msg) {}) // never answers
	_, _ = nc.Subscribe("hub.svc.fail", func(m *nats.Msg) { _ = m.Respond([]byte(`{"code":409,"msg":"taken","values":{"by":"x"}}`)) })
	_, _ = nc.Subscribe("hub.svc.garbage", func(m *nats.Msg) { _ = m.Respond([]byte(`not json`)) })
	_ = nc.Flush()

	dev := hubtest.Device(t, a, "R-300", "retail")
	r := dev.MustOK("/map/route", map[string]any{"from": "A"})
	var v map[string]any
	r.Decode(t, &v)
	if v["sn"] != "R-300" || v["role"] != "device" || v["node"] != "node-a" || v["group"] != "default" || v["user"] != "" || v["session"] == "" {
		t.Fatalf("backend saw headers %v", v)
	}
	if args, _ := json.Marshal(v["args"]); string(args) != `{"from":"A"}` {
		t.Fatalf("backend saw args %s", args)
	}
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/map/route", nil).Decode(t, &v)
	if v["user"] != "admin" || v["role"] != "admin" || v["group"] != "*" || v["sn"] != "" {
		t.Fatalf("backend saw admin headers %v", v)
	}
	if r := dev.MustCode(409, "/fail", nil); r.Msg != "taken" || string(r.Values) != `{"by":"x"}` {
		t.Fatalf("backend failure not passed through: %s", r.Raw)
	}
	dev.MustCode(500, "/garbage", nil)
	dev.MustCode(404, "/nobody/here", nil)
	// The slow one times out with 408 (the test node's service timeout is
	// shortened below in TestBackendServiceTimeout); here it is answered
	// asynchronously, so other requests go on meanwhile.
	id := dev.NextID()
	dev.Send(hubtest.RequestFrame("/slow", id, nil))
	dev.MustOK("/ping", nil)
}

func TestBackendServiceTimeout(t *testing.T) {
	t.Parallel()
	a, _, nc := twoNodes(t, func(h *hubConfig, _ *nodeConfig) { h.ServiceTimeout = 200 * time.Millisecond })
	if _, err := nc.Subscribe("hub.svc.slow", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	dev := hubtest.Device(t, a, "R-301", "retail")
	dev.MustCode(408, "/slow", nil)
}

func TestMultiMessageFrames(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	c := hubtest.Dial(t, n.WSURL(), nil)
	auth, _ := json.Marshal(map[string]any{"op": "request", "service": "/auth/device", "request_id": "a", "args": hubtest.DeviceArgs("R-400", "retail")})
	// Auth and two requests in one frame: the requests are handled after
	// the auth, as an authenticated session; the answers come back together.
	before := c.Frames()
	c.Send(string(auth) + "\n" + hubtest.RequestFrame("/ping", "p1", nil) + "\r\n\n" + hubtest.RequestFrame("/ping", "p2", nil) + "\n")
	for _, id := range []string{"a", "p1", "p2"} {
		if r := c.Response(id); r.Code != 0 {
			t.Fatalf("%s: %s", id, r.Raw)
		}
	}
	if got := c.Frames() - before; got != 1 {
		t.Fatalf("answers came in %d frames, want 1", got)
	}
	// Without request_id a success is not answered, a failure is, with "".
	c.Send(`{"op":"request","service":"/ping"}` + "\n" + `{"op":"request","service":"/admin/push"}`)
	r := c.Next(func(m hubtest.Msg) bool { return m.Op == "response" })
	if r.RequestID != "" || r.Code != 403 || !strings.Contains(r.Raw, `"request_id":""`) {
		t.Fatalf("got %s", r.Raw)
	}
}

// TestBurstCoalescedInOrder floods one device: every push arrives, in
// publish order, and the node packs them into fewer frames than messages.
func TestBurstCoalescedInOrder(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	dev := hubtest.Device(t, n, "R-500", "retail")
	nc := natstest.Connect(t, ns)
	before := dev.Frames()
	const total = 2000
	for i := range total {
		b, _ := json.Marshal(map[string]any{"service": "/push/seq", "values": map[string]int{"n": i}})
		if err := nc.Publish("hub.dev.R-500.push", b); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range total {
		p := dev.Push("/push/seq")
		var v struct{ N int }
		p.Decode(t, &v)
		if v.N != i {
			t.Fatalf("push %d arrived as number %d", v.N, i)
		}
	}
	frames := dev.Frames() - before
	t.Logf("%d pushes in %d frames", total, frames)
	if frames >= total {
		t.Fatalf("%d pushes took %d frames: nothing was coalesced", total, frames)
	}
}
