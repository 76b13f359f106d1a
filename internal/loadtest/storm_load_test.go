//go:build load

package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of the reconnect storm.
const (
	stormNodeID      = "storm"
	stormDialers     = 64               // concurrent first dials
	stormConnectWait = 3 * time.Minute  // for the first connect of every device
	stormBackWait    = 2 * time.Minute  // for every device to be back after the restart
	stormGoal        = 5 * time.Second  // restart to every device online again
	stormRedialMax   = 30 * time.Second // the SDK's default ceiling
	stormRedialMin   = 250 * time.Millisecond
)

// TestReconnectStorm is the reconnect storm after a node restart. One
// node process (embedded NATS, as a single node runs) holds STORM_DEVICES
// devices (default 15,000), connected from a device child process (the
// per-process limit of 20,000 files keeps them apart from the node). The
// node is killed with SIGKILL and started again at once on the same ports
// and data; every device, its connection gone, connects again with the
// SDK's backoff (full jitter from 250 ms, doubling to 30 s). The test
// measures the time from the restart to every device online again: the
// node holds every device session (fleethub_sessions), each authenticated,
// which the node answers only once its presence entry is acknowledged,
// and hub_presence holds an entry written by the new run for each. It
// fails when a device does not come back, when an entry is missing, or
// when the storm stored presence records (a device back within the grace
// is no change, so none is due); the 5 s goal is reported.
//
//	go test -count=1 -tags load -run TestReconnectStorm -v ./internal/loadtest
func TestReconnectStorm(t *testing.T) {
	n := envInt(t, "STORM_DEVICES", 15_000)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := BuildHub(dir)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(ports[1])
	args := []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(ports[0]),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(ports[1]),
		"--data-dir", filepath.Join(dir, "data"),
		"--node-id", stormNodeID,
	}
	if extra := os.Getenv("STORM_HUB_ARGS"); extra != "" {
		args = append(args, strings.Fields(extra)...)
	}
	first, err := StartHub(ctx, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = first.Stop() })

	// The children's control subjects live on a server of the test's own,
	// which the kill does not touch.
	ctl := natstest.Run(t)
	ctlNC := natstest.Connect(t, ctl)
	spec := ChildSpec{
		NATSURL: ctl.ClientURL(), Control: nats.NewInbox(), URLs: []string{first.WSURL},
		Dialers: stormDialers, Deadline: time.Now().Add(11 * time.Minute),
		Redial: true, RedialMin: stormRedialMin, RedialMax: stormRedialMax,
	}
	for i := range n {
		spec.Devices = append(spec.Devices, ChildDevice{SN: fmt.Sprintf("st-%06d", i), Type: "storm"})
	}
	kid, err := StartDeviceChild(ctx, exe, dir, 0, spec, ctlNC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s, err := kid.Stop(context.Background()); err != nil {
			t.Logf("device child stop: %v (stats %+v)", err, s)
		}
	})
	connectStart := time.Now()
	if err := awaitCond(ctx, stormConnectWait, 200*time.Millisecond, func() error {
		s, err := kid.Stats(ctx)
		if err != nil {
			return err
		}
		if s.Failed+s.Dropped > 0 {
			return fmt.Errorf("%d devices failed, %d dropped: %v", s.Failed, s.Dropped, s.Errors)
		}
		if s.Connected != n {
			return fmt.Errorf("%d of %d devices connected", s.Connected, n)
		}
		return nil
	}); err != nil {
		t.Fatalf("first connect: %v", err)
	}
	if err := first.WaitSessions(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d devices connected in %.1fs", n, time.Since(connectStart).Seconds())
	recordsBefore := stormRecords(ctx, t, stormBus(t, natsURL))

	// The kill, and the restart at once.
	killAt := time.Now()
	first.Kill()
	restartAt := time.Now()
	second, err := LaunchHub(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	cpu0, _ := CPUTime(second.PID)
	if path := os.Getenv("STORM_PROFILE"); path != "" {
		// A CPU profile of the restarted node over the storm (it needs
		// STORM_HUB_ARGS=--pprof).
		profiled := make(chan struct{})
		defer func() { <-profiled }()
		go func() {
			defer close(profiled)
			stormProfile(ctx, t, second, path)
		}()
	}
	var healthyAt, onlineAt time.Time
	sessions := -1.0
	err = awaitCond(ctx, stormBackWait, 50*time.Millisecond, func() error {
		if exited, werr := second.Exited(); exited {
			return fmt.Errorf("restarted node exited: %v", werr)
		}
		if healthyAt.IsZero() {
			if code, err := second.healthCode(ctx); err != nil || code != 200 {
				return fmt.Errorf("not healthy yet (%d, %v)", code, err)
			}
			healthyAt = time.Now()
		}
		m, err := second.Metrics(ctx)
		if err != nil {
			return err
		}
		if sessions = m[`fleethub_sessions{role="device"}`]; sessions != float64(n) {
			return fmt.Errorf("%v of %d device sessions", sessions, n)
		}
		// A session counts once authenticated, before its presence
		// entry is acknowledged; its device has its answer after.
		s, err := kid.Stats(ctx)
		if err != nil {
			return err
		}
		if s.Connected != n {
			return fmt.Errorf("%d of %d devices answered", s.Connected, n)
		}
		onlineAt = time.Now()
		return nil
	})
	cpu1, _ := CPUTime(second.PID)
	if err != nil {
		t.Fatalf("after the restart: %v\nnode log tail:\n%s", err, second.LogTail(4096))
	}
	back := onlineAt.Sub(restartAt)

	// What the devices saw, and what presence holds.
	s, err := kid.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Connected != n {
		t.Errorf("the child has %d of %d devices connected (%d redialing, %d dropped, %d failed)", s.Connected, n, s.Redialing, s.Dropped, s.Failed)
	}
	var failures []string
	lateFailures := 0
	for kind, c := range s.RedialFailures {
		last := s.LastFailure[kind]
		failures = append(failures, fmt.Sprintf("%s %d (last %.2fs after the restart)", kind, c, last.Sub(restartAt).Seconds()))
		if last.After(healthyAt) {
			lateFailures += c // some of them, at least, came once the node was healthy
		}
	}
	sort.Strings(failures)
	bus := stormBus(t, natsURL)
	entries := freshEntries(ctx, t, bus, spec.Devices, restartAt)
	recordsAfter := stormRecords(ctx, t, bus)
	if entries != n {
		t.Errorf("hub_presence holds %d entries of the new run, want %d", entries, n)
	}
	// A device back within its grace is no change: no record. One back
	// later was reported offline (node_lost, at the grace) and then
	// connected: each device's history still alternates, and ends online.
	offlineBack := stormHistories(ctx, t, bus, n)
	if recordsAfter-recordsBefore != 2*uint64(offlineBack) {
		t.Errorf("HUB_PRESENCE went from %d to %d records during the storm, for %d devices reported offline and back", recordsBefore, recordsAfter, offlineBack)
	}
	lines, problems := second.LogProblems(20)
	if problems > 0 {
		t.Logf("the restarted node's first WARN/ERROR lines:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("reconnect storm, %d devices: killed, restarted %.0f ms later; healthy %.2fs after the restart; "+
		"every device online %.2fs after the restart (%.2fs after the kill; goal %v: met %v); "+
		"%d devices back after the grace (reported offline and back); "+
		"%d redials; failed attempts: %s; node CPU from its start to all online %.2fs; %d WARN/ERROR log lines",
		n, ms(restartAt.Sub(killAt)), healthyAt.Sub(restartAt).Seconds(), back.Seconds(), onlineAt.Sub(killAt).Seconds(),
		stormGoal, back <= stormGoal, offlineBack, s.Redials, strings.Join(failures, ", "), (cpu1 - cpu0).Seconds(), problems)
	if lateFailures > 0 {
		t.Logf("failed attempts of a kind whose last came after the node was healthy: %d", lateFailures)
	}
}

// stormBus is a connection of the test's own to the node's embedded
// server, closed when the test ends.
func stormBus(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// stormRecords is how many records HUB_PRESENCE has stored (its last
// sequence).
func stormRecords(ctx context.Context, t *testing.T, nc *nats.Conn) uint64 {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	if err := awaitCond(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		st, err := js.Stream(ctx, schema.Layout{}.PresenceStream())
		if err != nil {
			return err
		}
		last = st.CachedInfo().State.LastSeq
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return last
}

// freshEntries counts the devices whose hub_presence entry names the node
// and was written since since (by the new run).
func freshEntries(ctx context.Context, t *testing.T, nc *nats.Conn, devs []ChildDevice, since time.Time) int {
	t.Helper()
	bucket := schema.Layout{}.Presence()
	prefix := "$KV." + bucket + "."
	fresh := 0
	for from := 0; from < len(devs); from += presence.MaxBatch {
		var subjs []string
		for _, d := range devs[from:min(from+presence.MaxBatch, len(devs))] {
			subjs = append(subjs, prefix+d.SN)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := presence.LastMessages(rctx, nc, "KV_"+bucket, subjs, func(_ string, _ uint64, h nats.Header, data []byte) {
			if h.Get("KV-Operation") != "" {
				return
			}
			var e schema.PresenceEntry
			if json.Unmarshal(data, &e) == nil && e.Node == stormNodeID && e.Since >= since.UnixMilli() {
				fresh++
			}
		})
		cancel()
		if err != nil {
			t.Fatalf("read hub_presence: %v", err)
		}
	}
	return fresh
}

// stormProfile takes a CPU profile of h from as soon as it serves HTTP, for
// 6 s, into path, then its goroutines into path.goroutines.txt.
func stormProfile(ctx context.Context, t *testing.T, h *Hub, path string) {
	client := &http.Client{Timeout: 30 * time.Second}
	var b []byte
	err := awaitCond(ctx, 30*time.Second, 20*time.Millisecond, func() error {
		resp, err := client.Get(h.HTTPURL + "/debug/pprof/profile?seconds=6")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		b, err = io.ReadAll(resp.Body)
		return err
	})
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Logf("profile: %v", err)
	}
	// Then where its goroutines wait, still in the storm.
	resp, err := client.Get(h.HTTPURL + "/debug/pprof/goroutine?debug=1")
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if err == nil {
		err = os.WriteFile(path+".goroutines.txt", b, 0o644)
	}
	if err != nil {
		t.Logf("goroutine profile: %v", err)
	}
}

// stormHistories reads every presence record and checks each device's
// history: it alternates, starting and ending online. It returns how many
// devices have more than their first record (offline and back again).
func stormHistories(ctx context.Context, t *testing.T, nc *nats.Conn, devices int) int {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	hist, bad, err := PresenceHistories(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Errorf("%d presence records do not decode", bad)
	}
	back := 0
	for sn, h := range hist {
		if i, err := CheckAlternation(h); err != nil {
			t.Errorf("%s: record %d: %v", sn, i, err)
		} else if !h[len(h)-1].Online {
			t.Errorf("%s: its last record says offline", sn)
		}
		if len(h) > 1 {
			back++
		}
	}
	if len(hist) != devices {
		t.Errorf("%d devices have presence records, want %d", len(hist), devices)
	}
	return back
}
