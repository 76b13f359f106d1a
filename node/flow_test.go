package node_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

func TestBasicFlow(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	dev := hubtest.Device(t, n, "R-001", "retail")
	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)

	pong := dev.MustOK("/ping", nil)
	var pv struct {
		ServerTimeMS int64 `json:"server_time_ms"`
	}
	pong.Decode(t, &pv)
	if d := time.Since(time.UnixMilli(pv.ServerTimeMS)); d < 0 || d > 5*time.Second {
		t.Fatalf("server_time_ms %d is off by %v", pv.ServerTimeMS, d)
	}

	r := admin.MustOK("/admin/push", map[string]any{"target": map[string]any{"sn": "R-001"}, "service": "/push/hello", "values": map[string]any{"x": 1}})
	var id struct{ ID string }
	r.Decode(t, &id)
	p := dev.Push("/push/hello")
	if p.ID != id.ID || string(p.Values) != `{"x":1}` {
		t.Fatalf("push %s, want id %s", p.Raw, id.ID)
	}

	// A backend that knows only NATS.
	nc := natstest.Connect(t, ns)
	body, _ := json.Marshal(map[string]any{"service": "/push/all", "values": map[string]any{"y": 2}})
	if err := nc.Publish("hub.all.push", body); err != nil {
		t.Fatal(err)
	}
	dev.Push("/push/all")
	admin.Push("/push/all")

	// A command answered by the device.
	go func() {
		req := dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" })
		dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{"moved":true}}`)
	}()
	res := admin.MustOK("/admin/command", map[string]any{"sn": "R-001", "service": "/cmd/move", "args": map[string]any{"to": "A"}})
	if string(res.Values) != `{"moved":true}` {
		t.Fatalf("command answer %s", res.Raw)
	}
}
