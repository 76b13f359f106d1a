package node_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
)

// /admin/nodes lists every live node from hub_nodes, sorted by id, with
// its address and session count; viewers may ask, devices may not.
func TestAdminNodes(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	addr := func(a string) hubtest.Option {
		return func(h *hub.Config, n *nodeConfig) {
			fastPresence(h, n)
			h.NodeAddr = a
		}
	}
	a := hubtest.StartNode(t, ns, "nodes-b", addr("10.0.0.2:8080"))
	b := hubtest.StartNode(t, ns, "nodes-a", addr("10.0.0.1:8080"))
	nc := natstest.Connect(t, ns)
	hubtest.PutUser(t, nc, "viewer1", "viewer-password-1", auth.RoleViewer, "*")
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	dev := hubtest.Device(t, b, "NODES-1", "robot")
	dev.MustCode(wire.CodeForbidden, "/admin/nodes", nil)

	type nodeView struct {
		ID       string `json:"id"`
		Addr     string `json:"addr"`
		Since    int64  `json:"since"`
		Sessions int    `json:"sessions"`
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		var v struct {
			Nodes []nodeView `json:"nodes"`
		}
		m := admin.Request("/admin/nodes", nil)
		if m.Code != 0 {
			return fmt.Errorf("/admin/nodes: %d %s", m.Code, m.Msg)
		}
		m.Decode(t, &v)
		if len(v.Nodes) != 2 || v.Nodes[0].ID != "nodes-a" || v.Nodes[1].ID != "nodes-b" {
			return fmt.Errorf("nodes %+v, want nodes-a and nodes-b in that order", v.Nodes)
		}
		for i, n := range v.Nodes {
			if n.Addr != fmt.Sprintf("10.0.0.%d:8080", i+1) || n.Since <= 0 || n.Sessions != 1 {
				return fmt.Errorf("node %+v: want an address, a start time and 1 session", n)
			}
		}
		return nil
	})
	var viewer *hubtest.Client
	natstest.Eventually(t, 10*time.Second, func() error {
		var err error
		viewer, err = tryLogin(t, a, "viewer1", "viewer-password-1")
		return err
	})
	viewer.MustOK("/admin/nodes", map[string]any{})
}

// /admin/forget (admin only): 409 while the device is online; once it is
// offline its registry entry and records go and the listing, the summary
// counts and the history no longer know it, on the node that asked and on
// the other. An unregistered device that was seen is forgotten the same
// way. A device that connects again afterwards is listed again.
func TestAdminForget(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	opts := func(h *hub.Config, n *nodeConfig) {
		fastPresence(h, n)
		h.SummaryInterval = 200 * time.Millisecond
	}
	a := hubtest.StartNode(t, ns, "forget-a", opts)
	b := hubtest.StartNode(t, ns, "forget-b", opts)
	nc := natstest.Connect(t, ns)
	hubtest.PutDevice(t, nc, "FORGET-1", "robot", "sh-01")
	hubtest.PutDevice(t, nc, "FORGET-2", "robot", "sh-01")
	hubtest.PutUser(t, nc, "viewer1", "viewer-password-1", auth.RoleViewer, "*")
	hubtest.PutUser(t, nc, "ops2", "ops-password-02", auth.RoleAdmin, "sh-02")

	dev1 := hubtest.Device(t, b, "FORGET-1", "robot")
	dev1.MustOK("/device/status", map[string]any{"electricity": map[string]any{"percent": 5}})
	dev1.MustOK("/device/event", map[string]any{"event": "bump", "priority": "normal"})
	dev2 := hubtest.Device(t, b, "FORGET-2", "robot")
	dev3 := hubtest.Device(t, b, "FORGET-3", "robot") // not registered
	var viewer, ops *hubtest.Client
	natstest.Eventually(t, 10*time.Second, func() error {
		var err error
		if viewer, err = tryLogin(t, a, "viewer1", "viewer-password-1"); err != nil {
			return err
		}
		ops, err = tryLogin(t, a, "ops2", "ops-password-02")
		return err
	})
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	adminB := hubtest.Admin(t, b, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"summary"}})

	listed := func(c *hubtest.Client) ([]string, int) {
		t.Helper()
		var v struct {
			Devices []struct {
				SN string `json:"sn"`
			} `json:"devices"`
		}
		c.MustOK("/admin/devices", nil).Decode(t, &v)
		var sns []string
		for _, d := range v.Devices {
			sns = append(sns, d.SN)
		}
		return sns, len(sns)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if sns, _ := listed(admin); !slices.Equal(sns, []string{"FORGET-1", "FORGET-2", "FORGET-3"}) {
			return fmt.Errorf("listed %v", sns)
		}
		return nil
	})

	viewer.MustCode(wire.CodeForbidden, "/admin/forget", map[string]any{"sn": "FORGET-1"})
	ops.MustCode(wire.CodeForbidden, "/admin/forget", map[string]any{"sn": "FORGET-1"})
	admin.MustCode(wire.CodeConflict, "/admin/forget", map[string]any{"sn": "FORGET-1"})
	admin.MustCode(wire.CodeNotFound, "/admin/forget", map[string]any{"sn": "FORGET-404"})
	admin.MustCode(wire.CodeBadRequest, "/admin/forget", map[string]any{"sn": "bad sn"})
	admin.MustCode(wire.CodeBadRequest, "/admin/forget", map[string]any{})

	_ = dev1.Conn.Close()
	_ = dev3.Conn.Close()
	// Offline first (listings are requests that succeed: polling a forget
	// that answers 409 through the grace would be 4xx after 4xx, which the
	// session's abuse limit closes).
	natstest.Eventually(t, 10*time.Second, func() error {
		var v struct {
			Devices []struct {
				SN string `json:"sn"`
			} `json:"devices"`
		}
		admin.MustOK("/admin/devices", map[string]any{"online": false}).Decode(t, &v)
		if len(v.Devices) != 2 || v.Devices[0].SN != "FORGET-1" || v.Devices[1].SN != "FORGET-3" {
			return fmt.Errorf("offline: %+v", v.Devices)
		}
		return nil
	})
	natstest.Eventually(t, 10*time.Second, func() error {
		for _, sn := range []string{"FORGET-1", "FORGET-3"} {
			if m := admin.Request("/admin/forget", map[string]any{"sn": sn}); m.Code != 0 {
				return fmt.Errorf("forget %s: %d %s", sn, m.Code, m.Msg)
			}
		}
		return nil
	})
	for _, c := range []*hubtest.Client{admin, adminB} {
		natstest.Eventually(t, 10*time.Second, func() error {
			if sns, _ := listed(c); !slices.Equal(sns, []string{"FORGET-2"}) {
				return fmt.Errorf("listed %v after the forget, want FORGET-2 only", sns)
			}
			return nil
		})
	}
	for _, topic := range []string{"status", "event", "presence"} {
		admin.MustCode(wire.CodeNotFound, "/admin/history", map[string]any{"sn": "FORGET-1", "topic": topic})
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		var sum struct {
			Online  int `json:"online"`
			Offline int `json:"offline"`
		}
		push := admin.Push("/push/summary")
		push.Decode(t, &sum)
		if sum.Online != 1 || sum.Offline != 0 {
			return fmt.Errorf("summary %+v, want 1 online, 0 offline", sum)
		}
		return nil
	})
	dev2.MustOK("/ping", nil)

	// It connects again: listed again.
	hubtest.PutDevice(t, nc, "FORGET-1", "robot", "sh-01")
	// Once the registry has reached node A: a device that authenticates
	// before is told group default, then closed with 4002 when its entry
	// comes (its answer may not have gone out by then). A probe of its
	// own, on a plain connection, tries until the answer names the group.
	natstest.Eventually(t, 5*time.Second, func() error {
		ws, _, err := websocket.DefaultDialer.Dial(a.WSURL(), nil)
		if err != nil {
			return err
		}
		defer ws.Close()
		frame := hubtest.RequestFrame("/auth/device", "probe", hubtest.DeviceArgs("FORGET-1", "robot"))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			return err
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		var r struct {
			Code   int `json:"code"`
			Values struct {
				Group string `json:"group"`
			} `json:"values"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.Code != 0 || r.Values.Group != "sh-01" {
			return fmt.Errorf("auth answered %s", data)
		}
		return nil
	})
	hubtest.Device(t, a, "FORGET-1", "robot")
	natstest.Eventually(t, 10*time.Second, func() error {
		if sns, _ := listed(adminB); !slices.Equal(sns, []string{"FORGET-1", "FORGET-2"}) {
			return fmt.Errorf("listed %v after it came back", sns)
		}
		return nil
	})
}
