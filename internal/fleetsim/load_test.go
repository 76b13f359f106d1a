//go:build load

package fleetsim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/fleetsim"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/loadtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The node binaries measured come from FLEETHUB_NODE_BIN: a path, or
// several label=path pairs separated by commas (for example
// before=/tmp/hub-6f1eb11,after=bin/hub), measured one after another in
// the same run so that their figures can be set side by side. Unset, the
// hub of this tree is built and measured as "this".
const nodeBinEnv = "FLEETHUB_NODE_BIN"

type nodeBin struct{ label, path string }

func nodeBinaries(t *testing.T, dir string) []nodeBin {
	t.Helper()
	v := strings.TrimSpace(os.Getenv(nodeBinEnv))
	if v == "" {
		p, err := loadtest.BuildHub(dir)
		if err != nil {
			t.Fatalf("build hub: %v", err)
		}
		return []nodeBin{{"this", p}}
	}
	var out []nodeBin
	for i, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		label, path, ok := strings.Cut(f, "=")
		if !ok {
			label, path = "bin"+strconv.Itoa(i), f
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			t.Fatalf("%s: %q: %v", nodeBinEnv, path, err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			t.Fatalf("%s: %q is not an executable file (%v)", nodeBinEnv, path, err)
		}
		out = append(out, nodeBin{label, abs})
	}
	return out
}

// TestNodeCostUnderBusFleet measures the CPU of a real hub process while
// the simulator plays a fleet on other nodes of its NATS: status every
// 10 s per device, 2 events per device per hour, presence at the default
// TTLs, 1% of the devices reconnecting per minute, each record also on its
// watch subject, the node index kept. It measures twice: with no session,
// then with one admin subscribed to one group of 100 devices (status,
// event and presence topics). Each binary and fleet size gets a fresh
// nats-server process and hub process; after the devices have connected
// (the ramp) and the hub has caught up (the settle), CPU is read from
// /proc over the window. The simulator runs in this process, so its CPU
// is apart from the hub's. Run it with:
//
//	go test -count=1 -tags load -run TestNodeCostUnderBusFleet -v -timeout 60m ./internal/fleetsim
//
// FLEETSIM_SIZES (default 10000,100000), FLEETSIM_WINDOW (60s),
// FLEETSIM_SETTLE (20s), FLEETSIM_NODES (10 simulated nodes),
// FLEETSIM_CONNS (4 publisher connections), FLEETSIM_CONNECT_RATE (5000
// connects/s in the ramp), FLEETSIM_CORE_FROM (status and events by core
// publish from 500000 devices on, cheaper for the simulator; the table
// says which and how many HUB_STATUS took), FLEETSIM_DIRECTORY_NODE (1:
// a second hub, hub-d, started first, holds the directory and is measured
// in a column of its own; 0: hub-a is alone and holds it) and
// FLEETHUB_NODE_BIN change the run.
func TestNodeCostUnderBusFleet(t *testing.T) {
	sizes := envInts(t, "FLEETSIM_SIZES", []int{10000, 100000})
	window := envDuration(t, "FLEETSIM_WINDOW", 60*time.Second)
	settle := envDuration(t, "FLEETSIM_SETTLE", 20*time.Second)
	nodes := envInts(t, "FLEETSIM_NODES", []int{10})[0]
	conns := envInts(t, "FLEETSIM_CONNS", []int{4})[0]
	connectRate := envInts(t, "FLEETSIM_CONNECT_RATE", []int{5000})[0]
	coreFrom := envInts(t, "FLEETSIM_CORE_FROM", []int{500000})[0]
	withDirectory := envInts(t, "FLEETSIM_DIRECTORY_NODE", []int{1})[0] != 0

	dir := t.TempDir()
	natsBin, err := loadtest.BuildNATSServer(dir)
	if err != nil {
		t.Fatalf("build nats-server: %v", err)
	}
	bins := nodeBinaries(t, dir)
	type row struct {
		bin         string
		devices     int
		core        bool
		bare, admin span
		adminFrames int
		adminErr    string
		rssKiB      int64
		stats       fleetsim.Stats
	}
	var rows []row
	// The table so far, logged after each row: a run cut short keeps its figures.
	table := func() {
		var b strings.Builder
		fmt.Fprintf(&b, "windows of %v after ramp + %v, %d simulated nodes, %d publisher connections, groups of 100 devices\n", window, settle, nodes, conns)
		fmt.Fprintf(&b, "| node binary | devices | hub %%core, no session | hub µs per sim msg | hub %%core, admin on 100 | admin frames/s | hub RSS MiB | directory node %%core | nats-server %%core | simulator %%core | sim msgs/s | statuses stored/sent | status by | sim late, max |\n")
		fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range rows {
			by := "JetStream, acked"
			if r.core {
				by = "core publish"
			}
			admin := fmt.Sprintf("%.2f", r.admin.hub)
			if r.adminErr != "" {
				admin = "no session: " + r.adminErr
			}
			fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %s | %.1f | %d | %.2f | %.1f | %.1f | %.0f | %.3f | %s | %v |\n", r.bin, r.devices, r.bare.hub,
				r.bare.hub*1e4/max(r.bare.msgsPerSec, 1), admin,
				float64(r.adminFrames)/window.Seconds(), r.rssKiB/1024, r.bare.dir, r.bare.nats, r.bare.sim, r.bare.msgsPerSec, r.bare.storedRatio, by,
				max(r.bare.late, r.admin.late).Round(time.Millisecond))
		}
		t.Log("\n" + b.String())
	}
	for _, bin := range bins {
		for _, n := range sizes {
			r := row{bin: bin.label, devices: n}
			func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
				defer cancel()
				ns, err := loadtest.StartNATS(ctx, natsBin, natstest.RestartablePort(t))
				if err != nil {
					t.Fatalf("start nats-server: %v", err)
				}
				defer func() { _ = ns.Stop() }()
				// The directory node first: it takes the directory lease
				// (one elected node keeps the sorted index of the fleet
				// for listings and summaries), so that hub-a, the node
				// measured, is a node like any other; the directory
				// node's own cost is a column of its own.
				var dirPID int
				if withDirectory {
					d, err := loadtest.StartHub(ctx, bin.path, "--nats-url", ns.URL, "--node-id", "hub-d",
						"--master-secret", string(hubtest.MasterSecret), "--admin-password", hubtest.AdminPassword)
					if err != nil {
						t.Fatalf("start directory hub %s: %v", bin.label, err)
					}
					defer func() { _ = d.Stop() }()
					dirPID = d.PID
				}
				h, err := loadtest.StartHub(ctx, bin.path, "--nats-url", ns.URL, "--node-id", "hub-a",
					"--master-secret", string(hubtest.MasterSecret), "--admin-password", hubtest.AdminPassword)
				if err != nil {
					t.Fatalf("start hub %s: %v", bin.label, err)
				}
				defer func() { _ = h.Stop() }()
				pubs := make([]*nats.Conn, conns)
				for k := range pubs {
					if pubs[k], err = nats.Connect(ns.URL, nats.Name("fleetsim")); err != nil {
						t.Fatalf("connect: %v", err)
					}
					defer pubs[k].Close()
				}
				ramp := max(10*time.Second, time.Duration(n)*time.Second/time.Duration(connectRate))
				r.core = n >= coreFrom
				sim, err := fleetsim.New(fleetsim.Config{Conn: pubs[0], Conns: pubs[1:], Devices: n, Nodes: nodes, Groups: max(1, n/100), Ramp: ramp, CorePublish: r.core})
				if err != nil {
					t.Fatalf("fleetsim.New: %v", err)
				}
				js, err := jetstream.New(pubs[0])
				if err != nil {
					t.Fatal(err)
				}
				simCtx, stopSim := context.WithCancel(ctx)
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = sim.Run(simCtx)
				}()
				defer func() {
					stopSim()
					wg.Wait()
				}()
				sleep(ctx, ramp+settle)

				// The window with no session on the hub, then the same with
				// one admin subscribed to one group of 100 devices.
				r.bare = measure(ctx, t, window, sim, js, h.PID, ns.PID(), dirPID)
				r.rssKiB, _ = loadtest.RSS(h.PID)
				admin, err := dialAdmin(ctx, h.WSURL, sim.Group(0))
				if err != nil {
					// An overloaded node may refuse sessions: that is a
					// finding, the row says so.
					health, _ := h.Health(ctx)
					r.adminErr = fmt.Sprintf("%v (healthz %v)", err, health)
					t.Logf("%s, %d devices: no admin session: %s", bin.label, n, r.adminErr)
				} else {
					frames0 := admin.frames.Load()
					r.admin = measure(ctx, t, window, sim, js, h.PID, ns.PID(), dirPID)
					r.adminFrames = int(admin.frames.Load() - frames0)
					admin.close()
					r.rssKiB, _ = loadtest.RSS(h.PID)
				}
				r.stats = sim.Stats()
				if exited, err := h.Exited(); exited {
					t.Errorf("%s: hub exited during the run: %v\n%s", bin.label, err, h.LogTail(4096))
				}
			}()
			rows = append(rows, r)
			if r.stats.Failed != 0 || r.stats.PublishErrors != 0 {
				t.Errorf("%s, %d devices: %d publishes failed, %d not sent", bin.label, n, r.stats.Failed, r.stats.PublishErrors)
			}
			t.Logf("%s, %d devices, no session: %s", bin.label, n, r.bare)
			t.Logf("%s, %d devices, one admin on a group of 100 (%d frames): %s", bin.label, n, r.adminFrames, r.admin)
			t.Logf("%s, %d devices: hub RSS %d MiB, simulator %+v", bin.label, n, r.rssKiB/1024, r.stats)
			table()
		}
	}
}

// admin is an admin session subscribed to one group, counting the frames
// it receives.
type admin struct {
	conn   *websocket.Conn
	frames atomic.Int64
	done   chan struct{}
}

// dialAdmin logs in as admin on wsURL and subscribes to group's status,
// event and presence, retrying the dial for up to 30 s while the node
// refuses (503 while not ready), each answer awaited up to 30 s.
func dialAdmin(ctx context.Context, wsURL, group string) (*admin, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var conn *websocket.Conn
	for {
		c, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL, nil)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial: %w", err)
		case <-time.After(time.Second):
		}
	}
	request := func(id, service string, args any) error {
		b, _ := json.Marshal(map[string]any{"op": "request", "service": service, "request_id": id, "args": args})
		if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
			return err
		}
		deadline, _ := ctx.Deadline()
		_ = conn.SetReadDeadline(deadline)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return fmt.Errorf("%s: %w", service, err)
			}
			var m struct {
				RequestID string `json:"request_id"`
				Code      int    `json:"code"`
				Msg       string `json:"msg"`
			}
			_ = json.Unmarshal(data, &m)
			if m.RequestID == id {
				if m.Code != 0 {
					return fmt.Errorf("%s: code %d %s", service, m.Code, m.Msg)
				}
				return nil
			}
		}
	}
	err := request("login", "/auth/login", map[string]any{"username": "admin", "password": hubtest.AdminPassword})
	if err == nil {
		err = request("sub", "/admin/subscribe", map[string]any{"groups": []string{group}, "topics": []string{"status", "event", "presence"}})
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	a := &admin{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
			a.frames.Add(1)
		}
	}()
	return a, nil
}

func (a *admin) close() {
	_ = a.conn.Close()
	<-a.done
}

// TestNodeBCost measures a node that holds no session (node B) while node
// A, another hub process on the same nats-server, holds 5,000 real
// WebSocket devices (a devsim process) reporting status every 2 s. Both
// nodes run the same binary; each binary of FLEETHUB_NODE_BIN gets its own
// nats-server, nodes and devices, one after another in the same run. Run
// it with:
//
//	go test -count=1 -tags load -run TestNodeBCost -v -timeout 30m ./internal/fleetsim
//
// NODEB_DEVICES (5000), NODEB_STATUS_EVERY (2s), NODEB_WINDOW (60s) and
// NODEB_SETTLE (15s) change the run.
func TestNodeBCost(t *testing.T) {
	devices := envInts(t, "NODEB_DEVICES", []int{5000})[0]
	every := envDuration(t, "NODEB_STATUS_EVERY", 2*time.Second)
	window := envDuration(t, "NODEB_WINDOW", 60*time.Second)
	settle := envDuration(t, "NODEB_SETTLE", 15*time.Second)

	dir := t.TempDir()
	natsBin, err := loadtest.BuildNATSServer(dir)
	if err != nil {
		t.Fatalf("build nats-server: %v", err)
	}
	devsimBin, err := buildDevsim(dir)
	if err != nil {
		t.Fatalf("build devsim: %v", err)
	}
	bins := nodeBinaries(t, dir)
	type row struct {
		bin                 string
		b, a, nats, devices float64 // % of one core
		bRSS                int64
		statusPerSec        float64
	}
	var rows []row
	for _, bin := range bins {
		r := row{bin: bin.label}
		func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			ns, err := loadtest.StartNATS(ctx, natsBin, natstest.RestartablePort(t))
			if err != nil {
				t.Fatalf("start nats-server: %v", err)
			}
			defer func() { _ = ns.Stop() }()
			start := func(id string) *loadtest.Hub {
				h, err := loadtest.StartHub(ctx, bin.path, "--nats-url", ns.URL, "--node-id", id)
				if err != nil {
					t.Fatalf("start %s (%s): %v", id, bin.label, err)
				}
				return h
			}
			a := start("hub-a")
			defer func() { _ = a.Stop() }()
			b := start("hub-b")
			defer func() { _ = b.Stop() }()

			ds := exec.Command(devsimBin, "--dev", "--url", a.WSURL, "--devices", strconv.Itoa(devices),
				"--status-interval", every.String(), "--event-rate", "0", "--disconnect-rate", "0", "--log-level", "warn")
			ds.Dir = dir
			logf, err := os.Create(filepath.Join(dir, "devsim-"+bin.label+".log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			ds.Stdout, ds.Stderr = logf, logf
			if err := ds.Start(); err != nil {
				t.Fatalf("start devsim: %v", err)
			}
			defer func() {
				_ = ds.Process.Signal(os.Interrupt)
				_ = ds.Wait()
			}()
			wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
			err = a.WaitSessions(wctx, devices)
			wcancel()
			if err != nil {
				t.Fatalf("%s: %v\ndevsim log in %s", bin.label, err, logf.Name())
			}
			sleep(ctx, settle)

			pids := []int{b.PID, a.PID, ns.PID(), ds.Process.Pid}
			c0 := make([]time.Duration, len(pids))
			for i, p := range pids {
				c0[i] = cpu(t, p)
			}
			m0, _ := a.Metrics(ctx)
			at0 := time.Now()
			sleep(ctx, window)
			wall := time.Since(at0)
			pct := make([]float64, len(pids))
			for i, p := range pids {
				pct[i] = 100 * (cpu(t, p) - c0[i]).Seconds() / wall.Seconds()
			}
			m1, _ := a.Metrics(ctx)
			r.b, r.a, r.nats, r.devices = pct[0], pct[1], pct[2], pct[3]
			r.bRSS, _ = loadtest.RSS(b.PID)
			r.statusPerSec = (requests(m1) - requests(m0)) / wall.Seconds()
			for _, h := range []*loadtest.Hub{a, b} {
				if exited, err := h.Exited(); exited {
					t.Errorf("%s: a hub exited during the run: %v\n%s", bin.label, err, h.LogTail(4096))
				}
			}
		}()
		rows = append(rows, r)
		t.Logf("%s: node B %.2f%% of a core, node A %.1f%%, nats-server %.1f%%, devsim %.1f%%, node A served %.0f requests/s",
			bin.label, r.b, r.a, r.nats, r.devices, r.statusPerSec)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d devices on node A, status every %v, window %v after a %v settle\n", devices, every, window, settle)
	fmt.Fprintf(&sb, "| node binary | node B %%core (no session) | node B µs per request on A | node B RSS MiB | node A %%core | nats-server %%core | devsim %%core | requests/s on A |\n")
	fmt.Fprintf(&sb, "|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %.2f | %.1f | %d | %.1f | %.1f | %.1f | %.0f |\n", r.bin, r.b, r.b*1e4/max(r.statusPerSec, 1), r.bRSS/1024, r.a, r.nats, r.devices, r.statusPerSec)
	}
	t.Log("\n" + sb.String())
}

// requests is the number of device requests a hub has served, from its
// metrics (every series of fleethub_requests_total).
func requests(m loadtest.Metrics) float64 { return m.Sum("fleethub_requests_total") }

// buildDevsim builds cmd/devsim into dir.
func buildDevsim(dir string) (string, error) {
	root, err := loadtest.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "devsim")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/devsim")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/devsim: %v\n%s", err, b)
	}
	return out, nil
}

// span is what one measuring window found: CPU in % of one core.
type span struct {
	hub, nats, sim float64
	dir            float64 // the directory node, when there is one
	msgsPerSec     float64
	late           time.Duration // how far behind its schedule the simulator was, at worst
	storedRatio    float64       // status records HUB_STATUS took over those sent
}

func (w span) String() string {
	return fmt.Sprintf("hub %.2f%% of a core, nats-server %.1f%%, simulator %.1f%%, %.0f msgs/s, simulator late by %v at most",
		w.hub, w.nats, w.sim, w.msgsPerSec, w.late.Round(time.Millisecond))
}

// measure reads the CPU of the hub, the nats-server and this process (the
// simulator) over d, and how far behind the simulator fell.
func measure(ctx context.Context, t *testing.T, d time.Duration, sim *fleetsim.Sim, js jetstream.JetStream, hubPID, natsPID, dirPID int) span {
	t.Helper()
	self := os.Getpid()
	dirCPU := func() time.Duration {
		if dirPID == 0 {
			return 0
		}
		return cpu(t, dirPID)
	}
	hub0, nats0, sim0, dir0 := cpu(t, hubPID), cpu(t, natsPID), cpu(t, self), dirCPU()
	st0, at0, seq0 := sim.Stats(), time.Now(), lastSeq(ctx, t, js, hub.StreamStatus)
	var late time.Duration
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
wait:
	for {
		select {
		case <-tick.C:
			late = max(late, sim.Stats().Behind)
		case <-end.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	hub1, nats1, sim1, dir1 := cpu(t, hubPID), cpu(t, natsPID), cpu(t, self), dirCPU()
	st1, wall, seq1 := sim.Stats(), time.Since(at0), lastSeq(ctx, t, js, hub.StreamStatus)
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / wall.Seconds() }
	return span{
		storedRatio: float64(seq1-seq0) / float64(max(st1.Statuses-st0.Statuses, 1)),
		hub:         pct(hub1 - hub0), nats: pct(nats1 - nats0), sim: pct(sim1 - sim0), dir: pct(dir1 - dir0),
		msgsPerSec: float64(st1.Published()-st0.Published()) / wall.Seconds(),
		late:       late,
	}
}

// lastSeq is the last sequence of a stream: how many records it has taken.
func lastSeq(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return info.State.LastSeq
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
