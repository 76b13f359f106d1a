package node_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// /admin/kick (PROTOCOL §5): an admin on one node ends a device's session
// on another with 4002 "kicked", its presence record says kicked once the
// grace has passed; a viewer gets 403, an admin outside the device's
// group 403 (and the device stays), a device not connected 503; a kick
// forged on the bus by a backend does nothing.
func TestAdminKick(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	a := hubtest.StartNode(t, ns, "kick-a", fastPresence)
	b := hubtest.StartNode(t, ns, "kick-b", fastPresence)
	nc := natstest.Connect(t, ns)
	recs := record(t, nc)
	hubtest.PutDevice(t, nc, "KICK-1", "robot", "sh-01")
	hubtest.PutDevice(t, nc, "KICK-2", "robot", "sh-02")
	hubtest.PutUser(t, nc, "viewer1", "viewer-password-1", auth.RoleViewer, "*")
	hubtest.PutUser(t, nc, "ops1", "ops-password-01", auth.RoleAdmin, "sh-01")

	dev1 := hubtest.Device(t, b, "KICK-1", "robot")
	dev2 := hubtest.Device(t, b, "KICK-2", "robot")
	var admin, viewer, ops *hubtest.Client
	natstest.Eventually(t, 10*time.Second, func() error {
		var err error
		if viewer, err = tryLogin(t, a, "viewer1", "viewer-password-1"); err != nil {
			return err
		}
		ops, err = tryLogin(t, a, "ops1", "ops-password-01")
		return err
	})
	admin = hubtest.Admin(t, a, "admin", hubtest.AdminPassword)

	viewer.MustCode(wire.CodeForbidden, "/admin/kick", map[string]any{"sn": "KICK-1"})
	ops.MustCode(wire.CodeForbidden, "/admin/kick", map[string]any{"sn": "KICK-2"})
	admin.MustCode(wire.CodeUnavailable, "/admin/kick", map[string]any{"sn": "KICK-404"})
	admin.MustCode(wire.CodeBadRequest, "/admin/kick", map[string]any{"sn": "bad sn"})
	admin.MustCode(wire.CodeBadRequest, "/admin/kick", map[string]any{})

	// A backend forging a kick on the device's command subject.
	forged := nats.NewMsg("hub.dev.KICK-2.cmd")
	forged.Header.Set("Hub-Kick", "1")
	forged.Data = []byte(`{"all":true}`)
	if _, err := nc.RequestMsg(forged, 500*time.Millisecond); err == nil {
		t.Fatalf("a forged kick was answered")
	}
	dev2.MustOK("/ping", nil)

	ops.MustOK("/admin/kick", map[string]any{"sn": "KICK-1"})
	if code := dev1.Closed(5 * time.Second); code != wire.CloseKicked || dev1.CloseText() != "kicked" {
		t.Fatalf("kicked device closed with %d %q, want 4002 kicked", code, dev1.CloseText())
	}
	if r, _ := recs.wait(t, "KICK-1", 2, 10*time.Second); r.Online || r.Reason != hub.Reason("kicked") {
		t.Fatalf("second presence record of KICK-1: %+v, want offline, kicked", r)
	}
	dev2.MustOK("/ping", nil)
	for _, r := range recs.of("KICK-2") {
		if !r.Online {
			t.Fatalf("KICK-2 went offline: %+v", r)
		}
	}
}

func tryLogin(t *testing.T, n *hubtest.Node, user, password string) (*hubtest.Client, error) {
	c := hubtest.Dial(t, n.WSURL(), nil)
	m := c.Request("/auth/login", map[string]any{"username": user, "password": password})
	if m.Code != 0 {
		_ = c.Conn.Close()
		b, _ := json.Marshal(m)
		return nil, fmt.Errorf("login %s: %s", user, strings.TrimSpace(string(b)))
	}
	return c, nil
}
