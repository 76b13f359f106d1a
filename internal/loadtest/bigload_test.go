//go:build load

// TestBigLoad runs a fleet of real WebSocket devices, 100,000 by default,
// over several node processes on one nats-server process on this machine.
// `make load` runs it; at a small scale, alone:
//
//	BIGLOAD_DEVICES=6000 BIGLOAD_NODES=3 LOAD_REPORT=/tmp/bigload.json LOAD_LOG_DIR=/tmp/bigload-logs \
//	  go test -count=1 -tags load -run TestBigLoad -v -timeout 20m ./internal/loadtest
//
// A process may hold at most 20,000 files here, so the devices come from
// device children (the test binary run again, see RunDeviceChild), each
// holding at most 17,000 of them, and the nodes (BIGLOAD_NODES, default 6)
// hold at most 18,000 each. Device i is on node i mod nodes; its type is
// one of BIGLOAD_TYPES (default 4) types, spread evenly over every node
// and child; the children start BIGLOAD_RATE dials a second (default
// 400) in all, a device refused with 503 trying again as a device would.
// The nodes run with --node-ttl BIGLOAD_NODE_TTL (default 2s)
// and --offline-grace BIGLOAD_GRACE (default 1s), so that node_lost comes
// within 10 s of a kill: at most node TTL + grace after the node's last
// refresh (PROTOCOL §6), plus the server's expiry and the records' writing.
//
//  1. Every device connects; all are online once each has a connected
//     record on hub.presence.* (the test subscribes before the first
//     dial). Each node's RSS, open files and CPU (from /proc), and the
//     connect rate, are reported, then each node's CPU over a 10 s window
//     with every device connected.
//  2. A probe push on hub.all.push reaches every device exactly once
//     (the children count per device).
//  3. A probe push on hub.type.<t>.push reaches exactly the devices of
//     type t, each once.
//  4. The last node is killed with SIGKILL. Its devices' children do not
//     reconnect them. Each of them must get exactly one presence record
//     after the kill, offline with reason node_lost, within 10 s of the
//     kill; no other device may get any record.
//
// LOAD_REPORT names a file for the JSON report; LOAD_LOG_DIR, a directory
// where the nodes' and the children's logs are kept when the test fails.

package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestMain runs a device child instead of the tests when ChildSpecEnv is
// set: TestBigLoad starts the test binary again that way.
func TestMain(m *testing.M) {
	if path := os.Getenv(ChildSpecEnv); path != "" {
		os.Exit(RunDeviceChild(path))
	}
	os.Exit(m.Run())
}

// Parameters and bounds of the big load test.
const (
	bigDefaultDevices = 100_000
	bigDefaultNodes   = 6
	bigDefaultTypes   = 4
	bigPerChild       = 17_000 // sockets per device child
	bigPerNode        = 18_000 // sessions per node (20,000 files each)
	bigDialers        = 24     // concurrent dials per child
	bigDefaultRate    = 400    // dials started per second, over all children
	bigNodeLostGoal   = 10 * time.Second
	bigNodeLostWait   = 60 * time.Second // how long the test waits for node_lost records (the goal is judged apart)
	bigQuiet          = 3 * time.Second  // no record for this long ends the wait for stray records
	bigQuietMax       = 20 * time.Second
	bigIdleWindow     = 10 * time.Second
	bigPushWait       = 60 * time.Second
	bigStable         = time.Second // counts unchanged this long after a probe has arrived
	bigBudget         = 14 * time.Minute
)

// BigNode is one node's figures.
type BigNode struct {
	ID             string  `json:"id"`
	Devices        int     `json:"devices"`
	Sessions       float64 `json:"sessions"` // fleethub_sessions{role="device"} once all are online
	RSSMiB         float64 `json:"rss_mib"`  // once all are online
	RSSIdleMiB     float64 `json:"rss_idle_mib"`
	FDs            int     `json:"open_files"`
	CPUStartS      float64 `json:"cpu_start_s"`          // until healthy
	CPUConnectS    float64 `json:"cpu_connect_s"`        // while the fleet connected
	IdleCPUPercent float64 `json:"idle_cpu_percent"`     // over the idle window, % of one core
	CPUPushesS     float64 `json:"cpu_pushes_s"`         // over both probes
	CPUNodeLostS   float64 `json:"cpu_node_lost_s"`      // from the kill to the judgement
	CPUTotalS      float64 `json:"cpu_total_s"`          // at the end (the killed node: at the kill)
	LogProblems    int     `json:"warn_error_log_lines"` // WARN and ERROR lines
}

// BigProbe is how one probe push was received.
type BigProbe struct {
	Subject   string      `json:"subject"`
	Expected  int         `json:"expected"`
	Result    ProbeResult `json:"result"`
	ArrivedMs float64     `json:"all_arrived_ms"` // publish to every expected device having it
	OK        bool        `json:"ok"`
}

// BigNodeLost is what the kill caused.
type BigNodeLost struct {
	Node        string   `json:"node"`
	Devices     int      `json:"devices"`
	Reported    int      `json:"reported_once"`
	Missing     int      `json:"missing"`
	Duplicates  int      `json:"duplicates"`   // devices with more than one node_lost record
	WrongRecord int      `json:"wrong_record"` // the node's devices with a record other than node_lost
	OtherDevs   int      `json:"other_devices_with_records"`
	P50Ms       float64  `json:"p50_ms"` // arrival minus the SIGKILL
	P99Ms       float64  `json:"p99_ms"`
	MaxMs       float64  `json:"max_ms"`
	GoalMet     bool     `json:"within_10s"`
	Samples     []string `json:"samples,omitempty"`
}

// BigReport is the whole run's outcome, written as JSON to LOAD_REPORT.
type BigReport struct {
	Start          time.Time          `json:"start"`
	GoVersion      string             `json:"go_version"`
	NumCPU         int                `json:"num_cpu"`
	Devices        int                `json:"devices"`
	Nodes          int                `json:"nodes"`
	Children       int                `json:"children"`
	Types          int                `json:"types"`
	NodeTTL        string             `json:"node_ttl"`
	Grace          string             `json:"offline_grace"`
	ConnectS       float64            `json:"connect_seconds"` // first dial to every device online
	ConnectPerSec  float64            `json:"connects_per_second"`
	RateGoal       int                `json:"connects_paced_per_second"` // BIGLOAD_RATE
	Auth503        int64              `json:"auth_503"`                  // auth refusals with 503, tried again
	DialRetries    int64              `json:"dial_retries"`
	PresenceKV     uint64             `json:"hub_presence_values"` // once all are online
	OfflineBefore  map[string]int     `json:"offline_records_before_kill,omitempty"`
	NodeList       []*BigNode         `json:"node_figures"`
	NATSRSSMiB     float64            `json:"nats_rss_mib"`
	NATSCPUS       float64            `json:"nats_cpu_s"`
	ChildRSSMiB    []float64          `json:"child_rss_mib"`
	ChildCPUS      []float64          `json:"child_cpu_s"`
	Probes         []*BigProbe        `json:"probes"`
	NodeLost       *BigNodeLost       `json:"node_lost,omitempty"`
	Survivors      string             `json:"survivor_drops,omitempty"`
	Undecodable    int                `json:"undecodable_presence"`
	LogSample      []string           `json:"log_sample,omitempty"`
	PhaseSeconds   map[string]float64 `json:"phase_seconds"`
	Seconds        float64            `json:"seconds"`
	Failures       []string           `json:"errors,omitempty"`
	logProblemsMap map[string]int
}

func TestBigLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("big load test skipped in -short mode")
	}
	n := envInt(t, "BIGLOAD_DEVICES", bigDefaultDevices)
	nodes := envInt(t, "BIGLOAD_NODES", bigDefaultNodes)
	types := envInt(t, "BIGLOAD_TYPES", bigDefaultTypes)
	nodeTTL := envDuration(t, "BIGLOAD_NODE_TTL", 2*time.Second)
	grace := envDuration(t, "BIGLOAD_GRACE", time.Second)
	connRate := envInt(t, "BIGLOAD_RATE", bigDefaultRate)
	children := (n + bigPerChild - 1) / bigPerChild
	perNode := (n + nodes - 1) / nodes
	switch {
	case nodes < 2 || nodes > 20:
		t.Fatalf("BIGLOAD_NODES=%d: want 2 to 20", nodes)
	case types < 2 || n < nodes*types:
		t.Fatalf("BIGLOAD_TYPES=%d, BIGLOAD_DEVICES=%d: want at least 2 types and a device of each type on each node", types, n)
	case perNode > bigPerNode:
		t.Fatalf("BIGLOAD_DEVICES=%d over %d nodes is %d a node: at most %d (a node may hold 20,000 files)", n, nodes, perNode, bigPerNode)
	}
	if lo, hi, err := portRange(); err == nil && hi-lo+1 < perNode+1000 {
		t.Fatalf("ephemeral ports %d-%d: too few for %d connections to one node", lo, hi, perNode)
	}
	ctx, cancel := testContext(t, bigBudget)
	defer cancel()

	start := time.Now()
	rep := &BigReport{
		Start: start, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), Devices: n, Nodes: nodes,
		Children: children, Types: types, NodeTTL: nodeTTL.String(), Grace: grace.String(), RateGoal: connRate,
		PhaseSeconds: map[string]float64{}, logProblemsMap: map[string]int{},
	}
	phaseAt := start
	phase := func(name string) {
		rep.PhaseSeconds[name] = time.Since(phaseAt).Seconds()
		phaseAt = time.Now()
		t.Logf("%s done after %.1fs", name, time.Since(start).Seconds())
	}
	fail, errorf := failures(t, &rep.Failures)
	var hubs []*Hub
	var kids []*DeviceChild
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("bl-%02d", i+1)
	}
	defer func() {
		// Close the devices first; then the nodes' logs are read, and the
		// nodes stop with nothing to hand over, in parallel.
		var wg sync.WaitGroup
		for _, k := range kids {
			wg.Go(func() {
				if _, err := k.Stop(context.WithoutCancel(ctx)); err != nil {
					t.Logf("stop device child %d: %v\nlog tail:\n%s", k.PID, err, k.LogTail(1024))
				}
			})
		}
		wg.Wait()
		noteLogs(t, ids[:len(hubs)], hubs, rep.logProblemsMap, &rep.LogSample)
		if keep := os.Getenv("LOAD_LOG_DIR"); keep != "" && t.Failed() {
			keepLogs(t, keep, ids, hubs, kids)
		}
		for _, nf := range rep.NodeList {
			nf.LogProblems = rep.logProblemsMap[nf.ID]
		}
		for _, h := range hubs {
			wg.Go(func() { _ = h.Stop() })
		}
		wg.Wait()
		rep.Seconds = time.Since(start).Seconds()
		logBigReport(t, rep)
		writeReport(t, rep)
	}()

	// The nats-server process, the presence watcher, the nodes.
	dir := t.TempDir()
	natsBin, err := BuildNATSServer(dir)
	if err != nil {
		fail("%v", err)
	}
	hubBin, err := BuildHub(dir)
	if err != nil {
		fail("%v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		fail("%v", err)
	}
	ns, err := StartNATS(ctx, natsBin, natstest.RestartablePort(t))
	if err != nil {
		fail("%v", err)
	}
	t.Cleanup(func() { _ = ns.Stop() })
	nc, err := nats.Connect(ns.URL, nats.Name("bigload"), nats.MaxReconnects(-1))
	if err != nil {
		fail("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	pres, err := watchBigPresence(nc)
	if err != nil {
		fail("subscribe %s: %v", subjects.AllPresence, err)
	}
	cpu0 := make([]time.Duration, nodes)
	for i, id := range ids {
		h, err := StartHub(ctx, hubBin, "--nats-url", ns.URL, "--node-id", id,
			"--node-ttl", nodeTTL.String(), "--offline-grace", grace.String())
		if err != nil {
			fail("start %s: %v", id, err)
		}
		hubs = append(hubs, h)
		t.Cleanup(func() { _ = h.Stop() })
		c, _ := CPUTime(h.PID)
		cpu0[i] = c
		rep.NodeList = append(rep.NodeList, &BigNode{ID: id, CPUStartS: c.Seconds()})
	}
	phase("start")

	// The devices: i on node i mod nodes, types and children spread evenly
	// over every node.
	urls := make([]string, nodes)
	for i, h := range hubs {
		urls[i] = h.WSURL
	}
	control := nats.NewInbox() // a unique prefix for the children's control subjects
	specs := make([]ChildSpec, children)
	for c := range specs {
		specs[c] = ChildSpec{NATSURL: ns.URL, Control: control + "." + strconv.Itoa(c), URLs: urls,
			Dialers: bigDialers, Rate: float64(connRate) / float64(children), Deadline: time.Now().Add(bigBudget + time.Minute)}
		if d, ok := ctx.Deadline(); ok {
			specs[c].Deadline = d.Add(time.Minute)
		}
	}
	nodeOf := make(map[string]int, n)
	typeOf := make([]string, types)
	for k := range typeOf {
		typeOf[k] = "bl-t" + strconv.Itoa(k)
	}
	for i := range n {
		node, q := i%nodes, i/nodes
		d := ChildDevice{SN: fmt.Sprintf("bl-%06d", i), Type: typeOf[q%types], URL: node}
		c := (q / types) % children
		specs[c].Devices = append(specs[c].Devices, d)
		nodeOf[d.SN] = node
		rep.NodeList[node].Devices++
	}

	// 1. Every device online.
	connStart := time.Now()
	for c, spec := range specs {
		if len(spec.Devices) > bigPerChild {
			fail("child %d holds %d devices, more than %d", c, len(spec.Devices), bigPerChild)
		}
		k, err := StartDeviceChild(ctx, exe, dir, c, spec, nc)
		if err != nil {
			fail("%v", err)
		}
		kids = append(kids, k)
	}
	// Half the paced rate at the slowest.
	connectWait := time.Minute + 2*time.Duration(n)*time.Second/time.Duration(max(connRate, 1))
	lastLog := time.Now()
	err = awaitCond(ctx, connectWait, time.Second, func() error {
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			t.Logf("%d of %d online after %.0fs", pres.onlineCount(), n, time.Since(connStart).Seconds())
		}
		var failed, connected int
		var sample []string
		for _, k := range kids {
			s, err := k.Stats(ctx)
			if err != nil {
				return err
			}
			failed += s.Failed + s.Dropped
			connected += s.Connected
			sample = append(sample, s.Errors...)
			if s.Dropped > 0 {
				sample = append(sample, fmt.Sprintf("dropped by node %v, endings %v", s.DroppedByURL, s.Endings))
			}
		}
		if failed > 0 {
			return fmt.Errorf("%w: %d devices failed or dropped: %s", errExited, failed, strings.Join(sample, "; "))
		}
		if on := pres.onlineCount(); on < n {
			return fmt.Errorf("%d of %d online, %d connected", on, n, connected)
		}
		return nil
	})
	connected := time.Since(connStart)
	connErr := err
	rep.ConnectS = connected.Seconds()
	rep.ConnectPerSec = float64(pres.onlineCount()) / connected.Seconds()
	// The nodes' figures are taken also when the connect failed.
	cpu1 := nodeCPU(hubs)
	for i, h := range hubs {
		nf := rep.NodeList[i]
		nf.CPUConnectS = (cpu1[i] - cpu0[i]).Seconds()
		if kib, err := RSS(h.PID); err == nil {
			nf.RSSMiB = float64(kib) / 1024
		}
		nf.FDs, _ = openFiles(h.PID)
		if m, err := h.Metrics(ctx); err == nil {
			nf.Sessions = m[`fleethub_sessions{role="device"}`]
		}
		if connErr == nil && int(nf.Sessions) != nf.Devices {
			errorf("%s holds %v device sessions, want %d", nf.ID, nf.Sessions, nf.Devices)
		}
	}
	rep.OfflineBefore = pres.offlineReasons()
	if connErr != nil {
		fail("connect: %v", connErr)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		var kv jetstream.KeyValue
		if kv, err = js.KeyValue(ctx, "hub_presence"); err == nil {
			var st jetstream.KeyValueStatus
			if st, err = kv.Status(ctx); err == nil {
				rep.PresenceKV = st.Values()
			}
		}
	}
	if err != nil {
		errorf("hub_presence status: %v", err)
	}
	for _, k := range kids {
		if s, err := k.Stats(ctx); err == nil {
			rep.DialRetries += s.DialRetries
			rep.Auth503 += s.Unavailable
		}
	}
	phase("connect")

	// The idle window: every device connected, nothing sent.
	if err := sleepCtx(ctx, bigIdleWindow); err != nil {
		fail("%v", err)
	}
	cpu2 := nodeCPU(hubs)
	for i, h := range hubs {
		nf := rep.NodeList[i]
		nf.IdleCPUPercent = 100 * (cpu2[i] - cpu1[i]).Seconds() / bigIdleWindow.Seconds()
		if kib, err := RSS(h.PID); err == nil {
			nf.RSSIdleMiB = float64(kib) / 1024
		}
	}
	phase("idle")

	// 2 and 3. The probes.
	typed, _ := subjects.TypePush(typeOf[1])
	for i, p := range []struct {
		subject, typ string
	}{{subjects.AllPush, ""}, {typed, typeOf[1]}} {
		bp, err := bigProbe(ctx, nc, kids, i+1, p.subject, p.typ)
		rep.Probes = append(rep.Probes, bp)
		if err != nil {
			errorf("probe on %s: %v", p.subject, err)
		}
	}
	cpu3 := nodeCPU(hubs)
	for i := range hubs {
		rep.NodeList[i].CPUPushesS = (cpu3[i] - cpu2[i]).Seconds()
	}
	phase("pushes")
	if t.Failed() {
		return
	}

	// 4. Kill the last node.
	victim := nodes - 1
	lost := make(map[string]bool, rep.NodeList[victim].Devices)
	for sn, node := range nodeOf {
		if node == victim {
			lost[sn] = true
		}
	}
	rep.OfflineBefore = pres.offlineReasons()
	if c := rep.OfflineBefore["node_lost"]; c > 0 {
		errorf("%d node_lost records before any node was killed (a node was found lost while it ran)", c)
	}
	killCPU, _ := CPUTime(hubs[victim].PID)
	killAt := pres.mark()
	hubs[victim].Kill()
	rep.NodeList[victim].CPUTotalS = killCPU.Seconds()
	err = awaitCond(ctx, bigNodeLostWait, 20*time.Millisecond, func() error {
		if got := pres.lostCount(); got < len(lost) {
			return fmt.Errorf("%d of %d node_lost records", got, len(lost))
		}
		return nil
	})
	if err != nil {
		errorf("node_lost: %v", err)
	}
	// Stray records (a second node_lost, a record for another device)
	// would come soon after: wait until the bus has been quiet a while.
	_ = awaitCond(ctx, bigQuietMax, 100*time.Millisecond, func() error {
		if q := time.Since(pres.lastArrival()); q < bigQuiet {
			return fmt.Errorf("last record %v ago", q)
		}
		return nil
	})
	nl := pres.judgeLost(ids[victim], lost, killAt)
	rep.NodeLost = nl
	if !nl.GoalMet || nl.Missing > 0 || nl.Duplicates > 0 || nl.WrongRecord > 0 || nl.OtherDevs > 0 {
		errorf("node_lost of %s: %d devices, %d reported once, %d missing, %d duplicated, %d with another record, %d other devices with records, max %.0f ms (goal %v): %s",
			nl.Node, nl.Devices, nl.Reported, nl.Missing, nl.Duplicates, nl.WrongRecord, nl.OtherDevs, nl.MaxMs, bigNodeLostGoal, strings.Join(nl.Samples, "; "))
	}
	cpu4 := nodeCPU(hubs)
	for i := range hubs {
		if i != victim {
			rep.NodeList[i].CPUNodeLostS = (cpu4[i] - cpu3[i]).Seconds()
			rep.NodeList[i].CPUTotalS = cpu4[i].Seconds()
		}
	}
	// Only the killed node's devices dropped.
	var drops []string
	for _, k := range kids {
		s, err := k.Stats(ctx)
		if err != nil {
			errorf("%v", err)
			continue
		}
		for u, d := range s.DroppedByURL {
			if u != victim && d > 0 {
				drops = append(drops, fmt.Sprintf("child %d: %d on %s", k.PID, d, ids[u]))
			}
		}
		if s.Failed > 0 {
			drops = append(drops, fmt.Sprintf("child %d: %d never connected", k.PID, s.Failed))
		}
	}
	if len(drops) > 0 {
		rep.Survivors = strings.Join(drops, "; ")
		errorf("devices of the surviving nodes dropped: %s", rep.Survivors)
	}
	if kib, err := RSS(ns.PID()); err == nil {
		rep.NATSRSSMiB = float64(kib) / 1024
	}
	if c, err := CPUTime(ns.PID()); err == nil {
		rep.NATSCPUS = c.Seconds()
	}
	for _, k := range kids {
		kib, _ := RSS(k.PID)
		c, _ := CPUTime(k.PID)
		rep.ChildRSSMiB = append(rep.ChildRSSMiB, float64(kib)/1024)
		rep.ChildCPUS = append(rep.ChildCPUS, c.Seconds())
	}
	rep.Undecodable = pres.undecodable()
	phase("node_lost")
}

// keepLogs copies the nodes' and the device children's logs into dir, as
// <node id>.log and child-<i>.log, before their directories go.
func keepLogs(t *testing.T, dir string, ids []string, hubs []*Hub, kids []*DeviceChild) {
	var from, to []string
	for i, h := range hubs {
		from, to = append(from, h.LogPath), append(to, ids[i]+".log")
	}
	for i, k := range kids {
		from, to = append(from, k.LogPath), append(to, "child-"+strconv.Itoa(i)+".log")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("LOAD_LOG_DIR: %v", err)
		return
	}
	for i := range from {
		b, err := os.ReadFile(from[i])
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, to[i]), b, 0o644)
		}
		if err != nil {
			t.Logf("LOAD_LOG_DIR: %v", err)
		}
	}
	t.Logf("logs kept in %s", dir)
}

// portRange is the kernel's ephemeral port range.
func portRange() (lo, hi int, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ip_local_port_range: %q", b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("ip_local_port_range: %q", b)
	}
	return lo, hi, nil
}

// nodeCPU is each node's CPU time so far (0 for one that has exited).
func nodeCPU(hubs []*Hub) []time.Duration {
	out := make([]time.Duration, len(hubs))
	for i, h := range hubs {
		out[i], _ = CPUTime(h.PID)
	}
	return out
}

// bigProbe publishes probe on subject and waits until every expected
// device (of typ, or all when typ is empty) has it, then until the counts
// have not changed for a second, and judges them.
func bigProbe(ctx context.Context, nc *nats.Conn, kids []*DeviceChild, probe int, subject, typ string) (*BigProbe, error) {
	bp := &BigProbe{Subject: subject}
	check := ProbeCheck{Probe: probe, Type: typ}
	sum := func() (ProbeResult, error) {
		var r ProbeResult
		for _, k := range kids {
			x, err := k.Check(ctx, check)
			if err != nil {
				return r, err
			}
			r.Expected += x.Expected
			r.Once += x.Once
			r.Missing += x.Missing
			r.Dup += x.Dup
			r.Unexpected += x.Unexpected
			r.Pushes += x.Pushes
			r.MissingSample = append(r.MissingSample, x.MissingSample...)
			r.DupSample = append(r.DupSample, x.DupSample...)
			r.UnexpectedSample = append(r.UnexpectedSample, x.UnexpectedSample...)
		}
		return r, nil
	}
	body := fmt.Sprintf(`{"service":%q,"values":{"probe":%d}}`, ProbeService, probe)
	at := time.Now()
	if err := nc.Publish(subject, []byte(body)); err != nil {
		return bp, err
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return bp, err
	}
	err := awaitCond(ctx, bigPushWait, 20*time.Millisecond, func() error {
		r, err := sum()
		if err != nil {
			return err
		}
		if r.Missing > 0 {
			return fmt.Errorf("%d of %d devices have it", r.Expected-r.Missing, r.Expected)
		}
		return nil
	})
	bp.ArrivedMs = ms(time.Since(at))
	if err != nil {
		r, _ := sum()
		bp.Result, bp.Expected = r, r.Expected
		return bp, err
	}
	var last ProbeResult
	var since time.Time
	err = awaitCond(ctx, bigPushWait, 100*time.Millisecond, func() error {
		r, err := sum()
		if err != nil {
			return err
		}
		if r.Pushes != last.Pushes || since.IsZero() {
			last, since = r, time.Now()
		}
		if time.Since(since) < bigStable {
			return fmt.Errorf("%d pushes, still changing", r.Pushes)
		}
		return nil
	})
	bp.Result, bp.Expected = last, last.Expected
	if err != nil {
		return bp, err
	}
	r := bp.Result
	bp.OK = r.Missing == 0 && r.Dup == 0 && r.Unexpected == 0 && r.Once == r.Expected
	if !bp.OK {
		return bp, fmt.Errorf("%d expected, %d once, %d missing %v, %d duplicated %v, %d outside the audience %v",
			r.Expected, r.Once, r.Missing, r.MissingSample, r.Dup, r.DupSample, r.Unexpected, r.UnexpectedSample)
	}
	return bp, nil
}

// bigPresence follows hub.presence.*, keeping counts rather than records:
// which devices are online, and after mark, each device's records.
type bigPresence struct {
	mu      sync.Mutex
	online  map[string]bool // the last record said online. Guarded by mu.
	nOnline int
	offline map[string]int // offline records before mark, by reason
	marked  bool
	markAt  time.Time
	after   map[string][]bigRecord // records after mark
	nLost   int                    // devices with a node_lost record after mark
	last    time.Time              // arrival of the last record
	bad     int
}

type bigRecord struct {
	Online  bool   `json:"online"`
	Reason  string `json:"reason"`
	Node    string `json:"node"`
	arrived time.Time
}

func watchBigPresence(nc *nats.Conn) (*bigPresence, error) {
	p := &bigPresence{online: map[string]bool{}, offline: map[string]int{}, after: map[string][]bigRecord{}}
	sub, err := nc.Subscribe(subjects.AllPresence, func(m *nats.Msg) {
		now := time.Now()
		var r struct {
			SN string `json:"sn"`
			bigRecord
		}
		err := json.Unmarshal(m.Data, &r)
		r.arrived = now
		p.mu.Lock()
		defer p.mu.Unlock()
		p.last = now
		if err != nil || r.SN == "" {
			p.bad++
			return
		}
		if r.Online != p.online[r.SN] {
			p.online[r.SN] = r.Online
			if r.Online {
				p.nOnline++
			} else {
				p.nOnline--
			}
		}
		if !p.marked {
			if !r.Online {
				p.offline[r.Reason]++
			}
			return
		}
		l := p.after[r.SN]
		if !r.Online && r.Reason == "node_lost" && !slices.ContainsFunc(l, func(x bigRecord) bool { return x.Reason == "node_lost" }) {
			p.nLost++
		}
		p.after[r.SN] = append(l, r.bigRecord)
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	return p, nc.Flush()
}

func (p *bigPresence) onlineCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nOnline
}

func (p *bigPresence) offlineReasons() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.offline))
	for k, v := range p.offline {
		out[k] = v
	}
	return out
}

// mark starts keeping each device's records, and returns when.
func (p *bigPresence) mark() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marked, p.markAt = true, time.Now()
	return p.markAt
}

func (p *bigPresence) lostCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nLost
}

func (p *bigPresence) lastArrival() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func (p *bigPresence) undecodable() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bad
}

// judgeLost judges the records since mark: each device of lost exactly
// one, offline with node_lost naming node; no other device any.
func (p *bigPresence) judgeLost(node string, lost map[string]bool, killAt time.Time) *BigNodeLost {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &BigNodeLost{Node: node, Devices: len(lost)}
	sample := func(format string, args ...any) {
		if len(r.Samples) < 10 {
			r.Samples = append(r.Samples, fmt.Sprintf(format, args...))
		}
	}
	var lat []time.Duration
	for sn := range lost {
		l := p.after[sn]
		var nodeLost int
		for _, x := range l {
			if !x.Online && x.Reason == "node_lost" && x.Node == node {
				if nodeLost == 0 {
					lat = append(lat, x.arrived.Sub(killAt))
				}
				nodeLost++
			}
		}
		switch {
		case len(l) == 0:
			r.Missing++
			sample("%s: no record", sn)
		case nodeLost == 1 && len(l) == 1:
			r.Reported++
		case nodeLost > 1:
			r.Duplicates++
			sample("%s: %d node_lost records", sn, nodeLost)
		default:
			r.WrongRecord++
			sample("%s: %s", sn, describeBig(l))
		}
	}
	for sn, l := range p.after {
		if !lost[sn] {
			r.OtherDevs++
			sample("%s (not on %s): %s", sn, node, describeBig(l))
		}
	}
	p50, p99, mx := quantiles(lat)
	r.P50Ms, r.P99Ms, r.MaxMs = ms(p50), ms(p99), ms(mx)
	r.GoalMet = r.Missing == 0 && len(lat) > 0 && mx <= bigNodeLostGoal
	return r
}

func describeBig(l []bigRecord) string {
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = fmt.Sprintf("%s/%s@%s", onOff(x.Online), x.Reason, x.Node)
	}
	return strings.Join(parts, ", ")
}

// logBigReport prints the report as one table.
func logBigReport(t *testing.T, r *BigReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfleethub big load: %s, %d CPUs, %.1fs; %d devices over %d node processes and %d device processes on one nats-server; node TTL %s, offline grace %s\n",
		r.GoVersion, r.NumCPU, r.Seconds, r.Devices, r.Nodes, r.Children, r.NodeTTL, r.Grace)
	fmt.Fprintf(&b, "connect: %.1fs, %.0f devices/s (paced at %d/s), %d dial retries, %d auth answers 503; hub_presence values %d\n",
		r.ConnectS, r.ConnectPerSec, r.RateGoal, r.DialRetries, r.Auth503, r.PresenceKV)
	fmt.Fprintf(&b, "%-6s %7s %8s %8s %9s %6s %8s %9s %7s %9s %8s %8s %5s\n",
		"node", "devices", "sessions", "RSS MiB", "idle MiB", "files", "start s", "connect s", "idle %", "pushes s", "lost s", "total s", "logs")
	for _, n := range r.NodeList {
		fmt.Fprintf(&b, "%-6s %7d %8.0f %8.1f %9.1f %6d %8.2f %9.2f %7.1f %9.2f %8.2f %8.2f %5d\n",
			n.ID, n.Devices, n.Sessions, n.RSSMiB, n.RSSIdleMiB, n.FDs, n.CPUStartS, n.CPUConnectS, n.IdleCPUPercent, n.CPUPushesS, n.CPUNodeLostS, n.CPUTotalS, n.LogProblems)
	}
	fmt.Fprintf(&b, "nats-server: RSS %.1f MiB, CPU %.1fs; device processes RSS MiB %v, CPU s %v\n",
		r.NATSRSSMiB, r.NATSCPUS, fmtFloats(r.ChildRSSMiB), fmtFloats(r.ChildCPUS))
	for _, p := range r.Probes {
		x := p.Result
		fmt.Fprintf(&b, "push %-22s expected %6d once %6d missing %d dup %d outside %d; all arrived %.0f ms: %s\n",
			p.Subject, p.Expected, x.Once, x.Missing, x.Dup, x.Unexpected, p.ArrivedMs, okFail(p.OK))
	}
	if l := r.NodeLost; l != nil {
		fmt.Fprintf(&b, "SIGKILL %s: %d devices, node_lost once %d, missing %d, dup %d, other record %d; other devices with records %d; after the kill p50 %.0f p99 %.0f max %.0f ms: %s\n",
			l.Node, l.Devices, l.Reported, l.Missing, l.Duplicates, l.WrongRecord, l.OtherDevs, l.P50Ms, l.P99Ms, l.MaxMs, passFail(l.GoalMet))
		for _, s := range l.Samples {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	fmt.Fprintf(&b, "offline records before the kill %v; undecodable presence records %d\n", r.OfflineBefore, r.Undecodable)
	for _, l := range r.LogSample {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, e := range r.Failures {
		fmt.Fprintf(&b, "ERROR: %s\n", e)
	}
	t.Log(b.String())
}

func fmtFloats(l []float64) string {
	parts := make([]string, len(l))
	for i, v := range l {
		parts[i] = strconv.FormatFloat(v, 'f', 1, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
