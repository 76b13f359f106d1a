//go:build load

package fleetsim_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/fleetsim"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/loadtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// TestNodeCostUnderBusFleet measures the CPU of a real hub process with no
// session at all while the simulator plays a fleet on other nodes of its
// NATS: status every 10 s per device, 2 events per device per hour,
// presence at the default TTLs, 1% of the devices reconnecting per minute.
// It measures twice: with no session, then with one admin subscribed to
// one group of 100 devices (status, event and presence topics).
// Each fleet size gets a fresh nats-server and hub process; after the
// devices have connected (the ramp) and the hub has caught up (the
// settle), CPU is read from /proc over the window. Run it with:
//
//	go test -count=1 -tags load -run TestNodeCostUnderBusFleet -v -timeout 30m ./internal/fleetsim
//
// FLEETSIM_SIZES (default 10000,100000), FLEETSIM_WINDOW (60s),
// FLEETSIM_SETTLE (20s) and FLEETSIM_NODES (10) change the run.
func TestNodeCostUnderBusFleet(t *testing.T) {
	sizes := envInts(t, "FLEETSIM_SIZES", []int{10000, 100000})
	window := envDuration(t, "FLEETSIM_WINDOW", 60*time.Second)
	settle := envDuration(t, "FLEETSIM_SETTLE", 20*time.Second)
	nodes := envInts(t, "FLEETSIM_NODES", []int{10})[0]

	dir := t.TempDir()
	natsBin, err := loadtest.BuildNATSServer(dir)
	if err != nil {
		t.Fatalf("build nats-server: %v", err)
	}
	hubBin, err := loadtest.BuildHub(dir)
	if err != nil {
		t.Fatalf("build hub: %v", err)
	}
	type row struct {
		devices     int
		bare, admin span
		adminFrames int
		rssKiB      int64
		stats       fleetsim.Stats
	}
	var rows []row
	for _, n := range sizes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		ns, err := loadtest.StartNATS(ctx, natsBin, natstest.RestartablePort(t))
		if err != nil {
			cancel()
			t.Fatalf("start nats-server: %v", err)
		}
		h, err := loadtest.StartHub(ctx, hubBin, "--nats-url", ns.URL, "--node-id", "hub-a",
			"--master-secret", string(hubtest.MasterSecret), "--admin-password", hubtest.AdminPassword)
		if err != nil {
			_ = ns.Stop()
			cancel()
			t.Fatalf("start hub: %v", err)
		}
		nc, err := nats.Connect(ns.URL, nats.Name("fleetsim"))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		ramp := max(10*time.Second, time.Duration(n)*200*time.Microsecond) // at most 5,000 connects a second
		sim, err := fleetsim.New(fleetsim.Config{Conn: nc, Devices: n, Nodes: nodes, Groups: max(1, n/100), Ramp: ramp})
		if err != nil {
			t.Fatalf("fleetsim.New: %v", err)
		}
		simCtx, stopSim := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = sim.Run(simCtx)
		}()
		sleep(ctx, ramp+settle)

		// The window with no session on the hub, then the same with one
		// admin subscribed to one group of 100 devices.
		r := row{devices: n}
		r.bare = measure(ctx, t, window, h.PID, ns.PID(), sim)
		admin := hubtest.Dial(t, h.WSURL, nil)
		admin.MustOK("/auth/login", map[string]any{"username": "admin", "password": hubtest.AdminPassword})
		admin.MustOK("/admin/subscribe", map[string]any{"groups": []string{sim.Group(0)}, "topics": []string{"status", "event", "presence"}})
		frames0 := admin.Frames()
		r.admin = measure(ctx, t, window, h.PID, ns.PID(), sim)
		r.adminFrames = admin.Frames() - frames0
		_ = admin.Conn.Close()
		r.rssKiB, _ = loadtest.RSS(h.PID)
		r.stats = sim.Stats()

		stopSim()
		wg.Wait()
		nc.Close()
		if exited, err := h.Exited(); exited {
			t.Errorf("hub exited during the run: %v\n%s", err, h.LogTail(4096))
		}
		_ = h.Stop()
		_ = ns.Stop()
		cancel()

		rows = append(rows, r)
		if r.stats.Failed != 0 || r.stats.PublishErrors != 0 {
			t.Errorf("%d devices: %d publishes failed, %d not sent", n, r.stats.Failed, r.stats.PublishErrors)
		}
		t.Logf("%d devices, no session: %s", n, r.bare)
		t.Logf("%d devices, one admin on a group of 100 (%d frames): %s", n, r.adminFrames, r.admin)
		t.Logf("%d devices: hub RSS %d MiB, stats %+v", n, r.rssKiB/1024, r.stats)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "windows of %v, %d simulated nodes, groups of 100 devices\n", window, nodes)
	fmt.Fprintf(&b, "| devices | hub %%core, no session | hub %%core, admin on 100 | hub RSS MiB | nats-server %%core | simulator %%core | sim µs/device-s | msgs/s |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %.2f | %.2f | %d | %.1f | %.1f | %.3f | %.0f |\n", r.devices, r.bare.hub, r.admin.hub, r.rssKiB/1024,
			r.bare.nats, r.bare.sim, r.bare.sim*1e4/float64(r.devices), r.bare.msgsPerSec)
	}
	t.Log("\n" + b.String())
}

// span is what one measuring window found: CPU in % of one core.
type span struct {
	hub, nats, sim float64
	msgsPerSec     float64
}

func (w span) String() string {
	return fmt.Sprintf("hub %.2f%% of a core, nats-server %.1f%%, simulator %.1f%%, %.0f msgs/s", w.hub, w.nats, w.sim, w.msgsPerSec)
}

// measure reads the CPU of the hub, the nats-server and this process (the
// simulator) over d.
func measure(ctx context.Context, t *testing.T, d time.Duration, hubPID, natsPID int, sim *fleetsim.Sim) span {
	t.Helper()
	self := os.Getpid()
	hub0, nats0, sim0 := cpu(t, hubPID), cpu(t, natsPID), cpu(t, self)
	st0, at0 := sim.Stats(), time.Now()
	sleep(ctx, d)
	hub1, nats1, sim1 := cpu(t, hubPID), cpu(t, natsPID), cpu(t, self)
	st1, wall := sim.Stats(), time.Since(at0)
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / wall.Seconds() }
	return span{
		hub: pct(hub1 - hub0), nats: pct(nats1 - nats0), sim: pct(sim1 - sim0),
		msgsPerSec: float64(st1.Published()-st0.Published()) / wall.Seconds(),
	}
}

func cpu(t *testing.T, pid int) time.Duration {
	t.Helper()
	d, err := loadtest.CPUTime(pid)
	if err != nil {
		t.Fatalf("cpu of %d: %v", pid, err)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

func envInts(t *testing.T, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("%s: bad number %q", name, f)
		}
		out = append(out, n)
	}
	return out
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s: bad duration %q", name, v)
	}
	return d
}
