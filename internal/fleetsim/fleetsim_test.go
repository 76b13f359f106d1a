package fleetsim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/fleetsim"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Test-sized presence timings, shared by the hub and the simulator.
const (
	testNodeTTL     = time.Second
	testPresenceTTL = 4 * time.Second
	testGrace       = 300 * time.Millisecond
)

func fastPresence(h *hub.Config, _ *node.Config) {
	h.NodeTTL, h.PresenceTTL, h.OfflineGrace = testNodeTTL, testPresenceTTL, testGrace
}

// startSim runs a simulator until the test ends and waits for it.
func startSim(t *testing.T, cfg fleetsim.Config) *fleetsim.Sim {
	t.Helper()
	sim, _ := startStoppableSim(t, cfg)
	return sim
}

// startStoppableSim runs a simulator until stop is called or the test
// ends; stop returns once Run has.
func startStoppableSim(t *testing.T, cfg fleetsim.Config) (*fleetsim.Sim, func()) {
	t.Helper()
	sim, err := fleetsim.New(cfg)
	if err != nil {
		t.Fatalf("fleetsim.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sim.Run(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	stop := func() {
		cancel()
		wg.Wait()
	}
	t.Cleanup(stop)
	return sim, stop
}

func listDevices(t *testing.T, admin *hubtest.Client) []hub.DeviceView {
	t.Helper()
	r := admin.MustOK("/admin/devices", map[string]any{"limit": 1000})
	var dv struct{ Devices []hub.DeviceView }
	r.Decode(t, &dv)
	return dv.Devices
}

// TestHubSeesSimulatedFleet: a real hub node on the simulator's NATS lists
// the simulated devices online on their nodes, pushes their statuses to a
// subscribed admin, and reports node_lost for the devices of a simulated
// node that stops refreshing its liveness entry.
func TestHubSeesSimulatedFleet(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	a := hubtest.StartNode(t, ns, "hub-a", fastPresence)
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"status", "presence"}})

	const devices, nodes = 200, 4
	nc := natstest.Connect(t, ns, nats.Name("fleetsim"))
	sim := startSim(t, fleetsim.Config{
		Conn: nc, Devices: devices, Nodes: nodes,
		PresenceTTL: testPresenceTTL, NodeTTL: testNodeTTL,
		StatusEvery: 500 * time.Millisecond, EventsPerHour: 3600, ReconnectPerMinute: -1,
		Ramp: 200 * time.Millisecond,
	})

	natstest.Eventually(t, 8*time.Second, func() error {
		devs := listDevices(t, admin)
		online := 0
		for _, d := range devs {
			if !strings.HasPrefix(d.SN, "SIM-") {
				continue
			}
			var i int
			if _, err := fmt.Sscanf(d.SN, "SIM-%d", &i); err != nil {
				return fmt.Errorf("serial %q: %v", d.SN, err)
			}
			if want := sim.NodeID(sim.NodeOf(i)); d.Online && d.Node != want {
				return fmt.Errorf("%s on node %q, want %q", d.SN, d.Node, want)
			}
			if d.Online {
				online++
			}
		}
		if online != devices {
			return fmt.Errorf("%d of %d simulated devices online", online, devices)
		}
		return nil
	})

	// Statuses reach the subscribed admin as the hub stores them.
	for range 5 {
		p := admin.Push("/push/status")
		var rec hub.StatusRecord
		p.Decode(t, &rec)
		if !strings.HasPrefix(rec.SN, "SIM-") || rec.Type != "sim" || !strings.HasPrefix(rec.Group, "simg") || len(rec.Status) == 0 {
			t.Fatalf("status push %s", p.Raw)
		}
	}

	// Node 0 dies: its entries name a node whose liveness entry expires,
	// and the hub (the coordinator: "hub-a" sorts before "zzsim-") reports
	// each of them node_lost once; the other nodes' devices stay online.
	stoppedAt := time.Now()
	sim.StopNode(0)
	natstest.Eventually(t, 8*time.Second, func() error {
		for _, d := range listDevices(t, admin) {
			var i int
			if _, err := fmt.Sscanf(d.SN, "SIM-%d", &i); err != nil {
				continue
			}
			if lost := sim.NodeOf(i) == 0; d.Online == lost {
				return fmt.Errorf("%s (node %d) online %v", d.SN, sim.NodeOf(i), d.Online)
			}
		}
		return nil
	})
	if d := time.Since(stoppedAt); d > 8*time.Second {
		t.Fatalf("node_lost after %v", d)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), hub.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < devices; i += nodes {
		subj, _ := subjects.Presence(sim.SN(i))
		m, err := st.GetLastMsgForSubject(context.Background(), subj)
		if err != nil {
			t.Fatalf("last record of %s: %v", sim.SN(i), err)
		}
		var r hub.PresenceRecord
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Online || r.Reason != hub.ReasonNodeLost || r.Node != sim.NodeID(0) {
			t.Fatalf("last record of %s: %s", sim.SN(i), m.Data)
		}
	}
	s := sim.Stats()
	if s.Connects != devices || s.Statuses == 0 || s.Events == 0 || s.NodeWrites == 0 || s.Failed != 0 || s.PublishErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
	t.Logf("stats %+v", s)
}

// TestChurn: devices that reconnect leave an alternating history in
// HUB_PRESENCE (connected, closed, connected...) that the hub pushes to a
// subscribed admin.
func TestChurn(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	a := hubtest.StartNode(t, ns, "hub-a", fastPresence)
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence"}})

	nc := natstest.Connect(t, ns, nats.Name("fleetsim"))
	// 50 devices at 120% a minute: one goes away every ~10ms of a second.
	sim := startSim(t, fleetsim.Config{
		Conn: nc, Devices: 50, Nodes: 2,
		PresenceTTL: testPresenceTTL, NodeTTL: testNodeTTL,
		StatusEvery: -1, EventsPerHour: -1, ReconnectPerMinute: 1.2,
		OfflineFor: 200 * time.Millisecond, Ramp: 100 * time.Millisecond,
	})
	// Follow the pushes until some device has gone and come back.
	seen := map[string][]hub.PresenceRecord{}
	deadline := time.Now().Add(8 * time.Second)
	var back string
	for back == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no device came back; stats %+v", sim.Stats())
		}
		p, ok := admin.TryPush("/push/presence", time.Until(deadline))
		if !ok {
			continue
		}
		var r hub.PresenceRecord
		p.Decode(t, &r)
		hist := append(seen[r.SN], r)
		seen[r.SN] = hist
		for k, h := range hist {
			if h.Online != (k%2 == 0) {
				t.Fatalf("%s: history not alternating: %+v", r.SN, hist)
			}
			if want := map[bool]hub.Reason{true: hub.ReasonConnected, false: hub.ReasonClosed}[h.Online]; h.Reason != want {
				t.Fatalf("%s: record %+v", r.SN, h)
			}
		}
		if len(hist) >= 3 {
			back = r.SN
		}
	}
	if s := sim.Stats(); s.Disconnects == 0 || s.EntryDeletes != s.Disconnects || s.IndexWrites < s.Connects+s.Disconnects-1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := fleetsim.New(fleetsim.Config{Devices: 1}); !errors.Is(err, fleetsim.ErrNoConn) {
		t.Fatalf("no conn: %v", err)
	}
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	if _, err := fleetsim.New(fleetsim.Config{Conn: nc}); !errors.Is(err, fleetsim.ErrNoDevices) {
		t.Fatalf("no devices: %v", err)
	}
	if _, err := fleetsim.New(fleetsim.Config{Conn: nc, Devices: 1, SNPrefix: "a.b"}); err == nil {
		t.Fatal("bad serial accepted")
	}
}

func TestRefreshAfterDefaults(t *testing.T) {
	if got := fleetsim.RefreshAfter(2 * time.Minute); got != 108*time.Second {
		t.Fatalf("RefreshAfter(2m) = %v, want 108s", got)
	}
}
