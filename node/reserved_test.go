package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestReservedPushesRefused: /push/presence, /push/status, /push/event and
// /push/summary are the hub's own. An admin's /admin/push naming one is
// 400; a body naming one on a push subject (a backend, a group-restricted
// admin's forgery) reaches nobody and is counted as reserved.
func TestReservedPushesRefused(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "node-r")
	dev := hubtest.Device(t, n, "RS-1", "dog")
	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	backend := natstest.Connect(t, ns)
	reserved := []string{"/push/presence", "/push/status", "/push/event", "/push/summary"}

	for _, svc := range reserved {
		r := admin.Request("/admin/push", map[string]any{"target": map[string]any{"sn": "RS-1"}, "service": svc, "values": map[string]any{"online": false}})
		if r.Code != 400 || !strings.Contains(r.Msg, "hub's own") {
			t.Errorf("/admin/push %s: %d %q, want 400 naming the hub's own services", svc, r.Code, r.Msg)
		}
	}
	before := droppedAs(t, n.Registry, "reserved")
	for _, subj := range []string{"hub.dev.RS-1.push", "hub.all.push", "hub.type.dog.push", "hub.role.device.push"} {
		for _, svc := range reserved {
			if err := backend.Publish(subj, []byte(`{"service":"`+svc+`","values":{"sn":"RS-1","online":false}}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A push that is the device's own, after the forgeries: once it
	// arrives, the forgeries before it on the same subjects were handled.
	for _, subj := range []string{"hub.dev.RS-1.push", "hub.all.push", "hub.type.dog.push", "hub.role.device.push"} {
		if err := backend.Publish(subj, []byte(`{"service":"/note/after","values":{"on":"`+subj+`"}}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 4 {
		m := dev.Next(func(m hubtest.Msg) bool { return m.Op == "push" })
		if m.Service != "/note/after" {
			t.Fatalf("the device received %s", m.Raw)
		}
		got[string(m.Values)] = true
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if d := droppedAs(t, n.Registry, "reserved") - before; d < 16 {
			return errorf("%v pushes counted as dropped, want 16", d)
		}
		return nil
	})
}

// droppedAs is fleethub_pushes_dropped_total{reason}.
func droppedAs(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "fleethub_pushes_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no fleethub_pushes_dropped_total{reason=%q}", reason)
	return 0
}
