//go:build load

// TestLoad measures one hub process under many device sessions. Run it
// with -count=1: go test caches a passing result, and a cached run measures
// nothing.
//
//	LOAD_SESSIONS=2000 LOAD_PUSHES=50 LOAD_UNICAST=5000 LOAD_REPORT=/tmp/load.json \
//	  go test -count=1 -tags load -run TestLoad -v -timeout 10m ./internal/loadtest
//
// It builds cmd/hub, starts it (--dev, embedded NATS) and, in one run:
// measures baseline RSS; connects 1,000 devices, measures RSS per idle
// session and a paced broadcast on hub.all.push; connects the rest up to
// LOAD_SESSIONS and measures both again; then a paced unicast on
// hub.dev.<sn>.push. Hub CPU comes from /proc/<pid>/stat, so it excludes
// the generator (this process), which shares the machine's CPUs: latency
// and deliveries/s therefore depend on the generator and on anything else
// running, which the report shows as "other CPU-s".

package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Load parameters. Environment variables override the counts:
// LOAD_SESSIONS (devices, default 10000, at most 18000), LOAD_PUSHES
// (broadcast pushes per scale, default 100), LOAD_UNICAST (unicast pushes,
// default 20000). LOAD_REPORT names a file for the JSON report.
const (
	maxSessions    = 18000 // this process may hold 20,000 files; keep headroom
	smallScale     = 1000  // the first broadcast measurement's fleet size
	dialWorkers    = 64    // concurrent dials
	roundSize      = 10    // broadcast pushes per paced round (queues hold 128)
	padBytes       = 100   // padding in each push's values
	unicastRate    = 2000  // unicast pushes per second
	sessionsWait   = 60 * time.Second
	defaultBudget  = 20 * time.Minute
	deadlineMargin = 30 * time.Second // left for cleanup before go test's -timeout
)

// settle is how RSS counts as settled: samples 200 ms apart within 1% over
// 1 s, giving up after 3 s (then the table marks the figure with *). No GC
// is forced in the hub, so RSS includes whatever garbage it holds.
var settle = SettleOptions{Interval: 200 * time.Millisecond, Window: time.Second, Tolerance: 0.01, Max: 3 * time.Second}

// ScaleReport is what one fleet size measured.
type ScaleReport struct {
	Sessions       int     `json:"sessions"`
	DialSeconds    float64 `json:"dial_seconds"` // connecting the devices added at this scale
	DialPerSec     float64 `json:"dials_per_second"`
	RSSKiB         int64   `json:"rss_kib"`
	RSSPerConnKiB  float64 `json:"rss_per_conn_kib"` // (RSS - baseline) / sessions
	RSSStable      bool    `json:"rss_stable"`
	IdleCPUPercent float64 `json:"idle_cpu_percent"` // hub CPU while settling, % of one core
	Goroutines     float64 `json:"hub_goroutines"`   // go_goroutines after settling
	HeapInuseKiB   float64 `json:"hub_heap_inuse_kib"`
	StackInuseKiB  float64 `json:"hub_stack_inuse_kib"`
	Broadcast      *Result `json:"broadcast,omitempty"`
}

// Report is the whole run's outcome, written as JSON to LOAD_REPORT.
type Report struct {
	Start          time.Time     `json:"start"`
	GoVersion      string        `json:"go_version"`
	NumCPU         int           `json:"num_cpu"`
	ClockTicks     int64         `json:"clock_ticks_per_second"`
	Sessions       int           `json:"sessions"`
	Pushes         int           `json:"broadcast_pushes"`
	RoundSize      int           `json:"broadcast_round"`
	PadBytes       int           `json:"pad_bytes"`
	UnicastCount   int           `json:"unicast_pushes"`
	UnicastRate    int           `json:"unicast_rate_per_second"`
	BaselineRSSKiB int64         `json:"baseline_rss_kib"`
	BaselineStable bool          `json:"baseline_rss_stable"`
	Scales         []ScaleReport `json:"scales"`
	Unicast        *Result       `json:"unicast,omitempty"`
	SlowConsumers  float64       `json:"slow_consumers_total"`
	PushesDropped  float64       `json:"pushes_dropped_total"`
	HubDelivered   float64       `json:"hub_pushes_delivered_total"`
	Fleet          FleetStats    `json:"fleet"`
	HubLogProblems int           `json:"hub_log_warn_error_lines"`
	HubLogSample   []string      `json:"hub_log_sample,omitempty"`
	HubExit        string        `json:"hub_exit"`
	Errors         []string      `json:"errors,omitempty"`
}

func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	n := envInt(t, "LOAD_SESSIONS", 10000)
	pushes := envInt(t, "LOAD_PUSHES", 100)
	unicast := envInt(t, "LOAD_UNICAST", 20000)
	if n < 1 || n > maxSessions {
		t.Fatalf("LOAD_SESSIONS=%d: want 1 to %d (this process may hold at most 20,000 files)", n, maxSessions)
	}
	if pushes < 1 || unicast < 1 {
		t.Fatalf("LOAD_PUSHES=%d, LOAD_UNICAST=%d: want at least 1 each", pushes, unicast)
	}

	budget := defaultBudget
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-deadlineMargin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	rep := &Report{
		Start: time.Now(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), ClockTicks: ClockTicks(),
		Sessions: n, Pushes: pushes, RoundSize: roundSize, PadBytes: padBytes,
		UnicastCount: unicast, UnicastRate: unicastRate, HubExit: "not stopped by the test",
	}
	var hub *Hub
	var fleet *Fleet
	logScanned, statsTaken := false, false
	scanLog := func() {
		if hub != nil && !logScanned {
			rep.HubLogSample, rep.HubLogProblems = hub.LogProblems(20)
			logScanned = true
		}
	}
	// The report is logged and written however the test ends, so the
	// figures measured before a failure are kept.
	defer func() {
		if fleet != nil && !statsTaken {
			rep.Fleet = fleet.Stats()
		}
		scanLog()
		if t.Failed() && hub != nil {
			t.Logf("hub log tail:\n%s", hub.LogTail(4096))
		}
		logReport(t, rep)
		writeReport(t, rep)
	}()
	fail, _ := failures(t, &rep.Errors)

	// a. Build and start the hub; baseline RSS once it has settled.
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		fail("build: %v", err)
	}
	hub, err = StartHub(ctx, bin)
	if err != nil {
		fail("start: %v", err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	t.Logf("hub pid %d, %s, %s", hub.PID, hub.WSURL, hub.NATSURL)
	base, err := SettleRSS(ctx, hub.PID, settle)
	if err != nil {
		fail("baseline RSS: %v", err)
	}
	rep.BaselineRSSKiB, rep.BaselineStable = base.RSSKiB, base.Stable

	fleet = NewFleet(hub.WSURL, "load-")
	t.Cleanup(fleet.Close)
	pusher, err := NewPusher(hub.NATSURL, padBytes)
	if err != nil {
		fail("%v", err)
	}
	t.Cleanup(pusher.Close)

	// b-d. Connect up to each scale, settle, measure RSS, then broadcast.
	scales := []int{n}
	if n > smallScale {
		scales = []int{smallScale, n}
	}
	for _, size := range scales {
		sr := ScaleReport{Sessions: size}
		added := size - fleet.Len()
		t0 := time.Now()
		if err := fleet.Grow(ctx, size, dialWorkers); err != nil {
			fail("connect %d devices: %v (%d connected)", size, err, fleet.Len())
		}
		sr.DialSeconds = time.Since(t0).Seconds()
		sr.DialPerSec = float64(added) / sr.DialSeconds
		wctx, wcancel := context.WithTimeout(ctx, sessionsWait)
		err := hub.WaitSessions(wctx, size)
		wcancel()
		if err != nil {
			fail("%v", err)
		}
		st, err := SettleRSS(ctx, hub.PID, settle)
		if err != nil {
			fail("RSS at %d sessions: %v", size, err)
		}
		sr.RSSKiB, sr.RSSStable = st.RSSKiB, st.Stable
		sr.RSSPerConnKiB = float64(st.RSSKiB-base.RSSKiB) / float64(size)
		sr.IdleCPUPercent = 100 * st.CPU.Seconds() / st.Took.Seconds()
		if gm, err := hub.Metrics(ctx); err == nil {
			sr.Goroutines = gm["go_goroutines"]
			sr.HeapInuseKiB = gm["go_memstats_heap_inuse_bytes"] / 1024
			sr.StackInuseKiB = gm["go_memstats_stack_inuse_bytes"] / 1024
		}
		t.Logf("%d sessions: dialled %d in %.1fs, RSS %d KiB (%.2f KiB/conn, stable %v), hub goroutines %.0f, heap in use %.0f KiB, stacks %.0f KiB",
			size, added, sr.DialSeconds, st.RSSKiB, sr.RSSPerConnKiB, st.Stable, sr.Goroutines, sr.HeapInuseKiB, sr.StackInuseKiB)

		bc, err := Broadcast(ctx, hub.PID, fleet, pusher, pushes, roundSize)
		sr.Broadcast = &bc
		rep.Scales = append(rep.Scales, sr)
		if err != nil {
			fail("broadcast at %d sessions: %v", size, err)
		}
	}

	// e. Unicast at full scale.
	uc, err := Unicast(ctx, hub.PID, fleet, pusher, unicast, unicastRate)
	rep.Unicast = &uc
	if err != nil {
		fail("%v", err)
	}

	// Checks: no slow consumer, no drop, no disconnect, exact counts.
	m, err := hub.Metrics(ctx)
	if err != nil {
		fail("metrics: %v", err)
	}
	rep.SlowConsumers = m.Sum("fleethub_slow_consumers_total")
	rep.PushesDropped = m.Sum("fleethub_pushes_dropped_total")
	rep.HubDelivered = m.Sum("fleethub_pushes_delivered_total")
	rep.Fleet, statsTaken = fleet.Stats(), true
	var want int64
	for _, s := range scales {
		want += int64(s) * int64(pushes)
	}
	want += int64(unicast)
	var problems []string
	if rep.SlowConsumers != 0 {
		problems = append(problems, fmt.Sprintf("fleethub_slow_consumers_total = %v, want 0", rep.SlowConsumers))
	}
	if rep.PushesDropped != 0 {
		problems = append(problems, fmt.Sprintf("fleethub_pushes_dropped_total = %v, want 0", rep.PushesDropped))
	}
	if rep.Fleet.Disconnects != 0 {
		problems = append(problems, fmt.Sprintf("%d devices disconnected: %s", rep.Fleet.Disconnects, rep.Fleet.EndingsString()))
	}
	if rep.Fleet.Pushes != want {
		problems = append(problems, fmt.Sprintf("devices received %d pushes, want %d", rep.Fleet.Pushes, want))
	}
	if rep.HubDelivered != float64(want) {
		problems = append(problems, fmt.Sprintf("hub counted %v pushes delivered, want %d", rep.HubDelivered, want))
	}

	// Tear down in order: devices, publisher, then the hub (SIGTERM).
	fleet.Close()
	pusher.Close()
	scanLog()
	if err := hub.Stop(); err != nil {
		rep.HubExit = err.Error()
		problems = append(problems, "hub exit: "+err.Error())
	} else {
		rep.HubExit = "clean"
	}
	for _, p := range problems {
		rep.Errors = append(rep.Errors, p)
		t.Error(p)
	}
}

// logReport prints the report as one table.
func logReport(t *testing.T, r *Report) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfleethub load: %s, %d CPUs, CLK_TCK %d; %d broadcast pushes in rounds of %d (+%d B pad), %d unicast at %d/s\n",
		r.GoVersion, r.NumCPU, r.ClockTicks, r.Pushes, r.RoundSize, r.PadBytes, r.UnicastCount, r.UnicastRate)
	fmt.Fprintf(&b, "baseline RSS %d KiB (stable %v)\n", r.BaselineRSSKiB, r.BaselineStable)
	fmt.Fprintf(&b, "%-10s %9s %9s %9s %8s %12s %12s %9s %9s %12s %9s %11s\n",
		"test", "sessions", "dial/s", "RSS MiB", "KiB/conn", "idle CPU %", "CPU-s/M del", "p50 ms", "p99 ms", "deliveries/s", "gen CPU-s", "other CPU-s")
	for _, s := range r.Scales {
		stable := ""
		if !s.RSSStable {
			stable = "*"
		}
		fmt.Fprintf(&b, "%-10s %9d %9.0f %9.1f %7.2f%s %12.1f", "broadcast", s.Sessions, s.DialPerSec,
			float64(s.RSSKiB)/1024, s.RSSPerConnKiB, stable, s.IdleCPUPercent)
		if bc := s.Broadcast; bc != nil && bc.Deliveries > 0 {
			fmt.Fprintf(&b, " %12.2f %9.2f %9.2f %12.0f %9.2f %11.2f\n", bc.CPUSecPerMillion, bc.P50Ms, bc.P99Ms,
				bc.DeliveriesPerSec, bc.GenCPUSeconds, bc.OtherCPUSeconds)
		} else {
			fmt.Fprintf(&b, " %12s\n", "(failed)")
		}
	}
	if u := r.Unicast; u != nil {
		if u.Deliveries > 0 {
			fmt.Fprintf(&b, "%-10s %9d %9s %9s %8s %12s %12.2f %9.2f %9.2f %12.0f %9.2f %11.2f\n", "unicast", u.Sessions, "", "", "", "",
				u.CPUSecPerMillion, u.P50Ms, u.P99Ms, u.DeliveriesPerSec, u.GenCPUSeconds, u.OtherCPUSeconds)
		} else {
			fmt.Fprintf(&b, "%-10s %9d (failed)\n", "unicast", u.Sessions)
		}
	}
	b.WriteString("(* = RSS not stable within 1% when the 3 s settle ended; CPU-s/M del = hub CPU seconds per million deliveries;\n" +
		" latency = publish stamp to device receipt; gen CPU-s = this test process's CPU over the same span;\n" +
		" other CPU-s = every other process on the machine over the same span, i.e. competition for the CPUs)\n")
	fmt.Fprintf(&b, "slow consumers %v, pushes dropped %v, hub delivered %v; devices: %d, pushes %d, other msgs %d, disconnects %d, dial retries %d\n",
		r.SlowConsumers, r.PushesDropped, r.HubDelivered, r.Fleet.Devices, r.Fleet.Pushes, r.Fleet.Others, r.Fleet.Disconnects, r.Fleet.DialRetries)
	fmt.Fprintf(&b, "hub WARN/ERROR log lines: %d; hub exit: %s\n", r.HubLogProblems, r.HubExit)
	for _, l := range r.HubLogSample {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "ERROR: %s\n", e)
	}
	t.Log(b.String())
}

// writeReport writes a JSON report to $LOAD_REPORT, if set.
func writeReport(t *testing.T, r any) {
	path := os.Getenv("LOAD_REPORT")
	if path == "" {
		return
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if err != nil {
		t.Errorf("write LOAD_REPORT %s: %v", path, err)
		return
	}
	t.Logf("report written to %s", path)
}

// failures returns fail and errorf, which record a message in the report's
// errors (so the table and the JSON show it) and then fail the test, the
// first at once, the second at its end.
func failures(t *testing.T, errs *[]string) (fail, errorf func(format string, args ...any)) {
	record := func(format string, args []any) string {
		msg := fmt.Sprintf(format, args...)
		*errs = append(*errs, msg)
		return msg
	}
	fail = func(format string, args ...any) {
		t.Helper()
		t.Fatal(record(format, args))
	}
	errorf = func(format string, args ...any) {
		t.Helper()
		t.Error(record(format, args))
	}
	return fail, errorf
}

// noteLogs puts each node's count of WARN and ERROR log lines, and a few
// of them, in a report, and logs each node's log tail if the test failed.
func noteLogs(t *testing.T, ids []string, nodes []*Hub, counts map[string]int, sample *[]string) {
	for i, h := range nodes {
		lines, total := h.LogProblems(5)
		counts[ids[i]] = total
		for _, l := range lines {
			*sample = append(*sample, ids[i]+": "+l)
		}
		if t.Failed() {
			t.Logf("%s log tail:\n%s", ids[i], h.LogTail(2048))
		}
	}
}

func envInt(t *testing.T, name string, def int) int { return envValue(t, name, def, strconv.Atoi) }

// envValue parses the environment variable name, def when it is unset.
func envValue[T any](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := parse(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return v
}
