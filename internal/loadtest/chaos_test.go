//go:build load

// TestChaos kills real processes under load: a node, then the NATS server.
// `make load` runs it; alone:
//
//	CHAOS_DEVICES=240 CHAOS_NATS_DOWN=2s LOAD_REPORT=/tmp/chaos.json \
//	  go test -count=1 -tags load -run TestChaos -v -timeout 10m ./internal/loadtest
//
// Nodes ck-a (A) and ck-b (B) join a nats-server process built from the
// module go.mod pins, with its file store in a temporary directory, on a
// port below the ephemeral range (so that it can come back on it). Half
// the devices are on B; A's are of three kinds: returners (half of A's),
// whose SDK client has B as its second URL and reconnects there at once;
// late returners (a quarter), which come back on B 700 ms before the
// offline grace has passed since the kill; and stranded devices (a
// quarter), which stay away until their offline record is in. Every device
// reports its status every 300 ms through the SDK, each report carrying a
// content id; only a code-0 answer counts as acknowledged.
//
//  1. Every device is connected and has 3 acknowledged reports.
//  2. A is killed with SIGKILL. The returners report again on B; the
//     stranded devices each get one node_lost record; then they come back
//     on B and report again.
//  3. The nats-server is killed with SIGKILL; once B's /healthz says so
//     (503), it stays down CHAOS_NATS_DOWN (default 2s), then starts again
//     on the same port and store. Reports fail meanwhile (503, timeouts:
//     allowed, not counted as acknowledged); once B is healthy, every
//     device must have 2 acknowledged reports more.
//  4. Every device closes; every offline record must come.
//
// Then every acknowledged report must be in HUB_STATUS, and each device's
// history in HUB_PRESENCE must be exactly: for the stranded devices
// connected, node_lost (naming ck-a), connected, closed; for every other
// device connected, closed: no offline record for a device that came
// back within the grace, none for anything the NATS restart did. A late
// returner whose new session was authenticated only after the grace (a
// loaded machine) is reported apart and not judged beyond alternation.
// node_lost latency (record arrival minus the kill) is reported: it must be
// at least the grace, since the grace counts from when the node is found
// lost.

package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/client"
	fhub "github.com/fleethub/fleethub/hub"
	"github.com/nats-io/nats.go/jetstream"
)

// Parameters and bounds of the chaos test.
const (
	chaosDefaultDevices = 240
	chaosMaxDevices     = 2000
	chaosGrace          = 5 * time.Second // --offline-grace, cmd/hub's default, passed explicitly
	chaosNodeTTL        = 5 * time.Second // --node-ttl, likewise
	chaosLateMargin     = 700 * time.Millisecond
	chaosPace           = 300 * time.Millisecond
	chaosWarmAcks       = 3
	chaosRecoverAcks    = 2
	chaosHistory        = 2000 // --status-history: more than a device sends in the run (checked)
	chaosDialers        = 16
	chaosWait           = 30 * time.Second // for devices to connect, to report again, for NATS to be seen down or up
	chaosRecoverWait    = 60 * time.Second // for every device to report again after the NATS restart
	chaosNodeLostWait   = chaosNodeTTL + chaosGrace + 20*time.Second
	chaosOfflineWait    = chaosGrace + 30*time.Second
	chaosBudget         = 8 * time.Minute
	chaosSample         = 10
)

var chaosIDs = []string{"ck-a", "ck-b"}

// Kinds of chaos devices.
const (
	groupSteady   = "steady"   // on B throughout
	groupReturner = "returner" // on A, then on B at once
	groupLate     = "late"     // on A, then on B just within the grace
	groupStranded = "stranded" // on A, then away until node_lost, then on B
)

// ChaosGroup is what one kind of device saw.
type ChaosGroup struct {
	Group     string   `json:"group"`
	Devices   int      `json:"devices"`
	Correct   int      `json:"correct_histories"`
	Wrong     int      `json:"wrong_histories"`
	TooLate   int      `json:"back_after_grace"` // late returners authenticated after the grace: not judged
	Anomalies []string `json:"anomalies,omitempty"`
}

// ChaosReport is the whole run's outcome, written as JSON to LOAD_REPORT.
type ChaosReport struct {
	Start          time.Time          `json:"start"`
	GoVersion      string             `json:"go_version"`
	NumCPU         int                `json:"num_cpu"`
	Devices        int                `json:"devices"`
	NATSDown       string             `json:"nats_down_hold"`
	Groups         []*ChaosGroup      `json:"groups"`
	Records        LedgerCheck        `json:"records"`
	NodeLostMinMs  float64            `json:"node_lost_min_ms"` // record arrival minus the SIGKILL of A
	NodeLostMaxMs  float64            `json:"node_lost_max_ms"`
	ReturnedMaxMs  float64            `json:"returners_back_max_ms"` // kill to the first ack on B
	LateBackMaxMs  float64            `json:"late_back_max_ms"`      // kill to the late returners' new session
	NATSOutageMs   float64            `json:"nats_outage_ms"`        // kill to the restarted server answering
	HealthDownMs   float64            `json:"b_unhealthy_after_ms"`  // kill to B's /healthz 503
	RecoveredMs    float64            `json:"recovered_ms"`          // restart to every device acknowledged again
	SessionDrops   map[string]int     `json:"session_drops"`         // sessions that ended, by phase
	Errors         map[string]int     `json:"report_errors"`         // failed reports, by group and kind
	ErrorSample    []string           `json:"report_error_sample,omitempty"`
	PresenceTotal  int                `json:"presence_records"`
	HubLogProblems map[string]int     `json:"hub_log_warn_error_lines"`
	HubLogSample   []string           `json:"hub_log_sample,omitempty"`
	PhaseSeconds   map[string]float64 `json:"phase_seconds"`
	Seconds        float64            `json:"seconds"`
	Failures       []string           `json:"errors,omitempty"`
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	n := envInt(t, "CHAOS_DEVICES", chaosDefaultDevices)
	down := envDuration(t, "CHAOS_NATS_DOWN", 2*time.Second)
	if n < 8 || n > chaosMaxDevices {
		t.Fatalf("CHAOS_DEVICES=%d: want 8 to %d", n, chaosMaxDevices)
	}
	if down < 0 || down > time.Minute {
		t.Fatalf("CHAOS_NATS_DOWN=%v: want 0 to 1m", down)
	}
	ctx, cancel := testContext(t, chaosBudget)
	defer cancel()

	start := time.Now()
	rep := &ChaosReport{
		Start: start, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), Devices: n, NATSDown: down.String(),
		SessionDrops: map[string]int{}, HubLogProblems: map[string]int{}, PhaseSeconds: map[string]float64{},
	}
	r := &chaosRun{ledger: NewLedger(), rep: rep}
	phaseAt := start
	phase := func(name string) {
		rep.PhaseSeconds[name] = time.Since(phaseAt).Seconds()
		phaseAt = time.Now()
		t.Logf("%s done after %.1fs", name, time.Since(start).Seconds())
	}
	defer func() {
		noteLogs(t, chaosIDs, r.nodes, rep.HubLogProblems, &rep.HubLogSample)
		rep.Errors, rep.ErrorSample = r.errs.snapshot()
		r.mu.Lock()
		for k, v := range r.drops {
			rep.SessionDrops[k] = v
		}
		r.mu.Unlock()
		rep.Seconds = time.Since(start).Seconds()
		logChaosReport(t, rep)
		writeReport(t, rep)
	}()
	fail, errorf := failures(t, &rep.Failures)

	// The nats-server process, the presence watcher, the nodes.
	rg, err := startRig(ctx, t, "chaos")
	if err != nil {
		fail("%v", err)
	}
	ns, nc, recs := rg.ns, rg.nc, rg.recs
	r.nodes, err = startNodes(ctx, t, rg.hubBin, ns.URL, chaosIDs, "--offline-grace", chaosGrace.String(), "--node-ttl", chaosNodeTTL.String(),
		"--pong-wait", "15s", "--ping-interval", "10s", "--status-history", strconv.Itoa(chaosHistory))
	if err != nil {
		fail("%v", err)
	}
	a, b := r.nodes[0], r.nodes[1]
	phase("start")

	// 1. Connect every device, start reporting, wait for 3 acks each.
	onB := n / 2
	onA := n - onB
	for i := range n {
		d := &chaosDev{sn: "ck-" + strconv.Itoa(i), group: groupSteady, urls: []string{b.WSURL, a.WSURL}}
		switch j := i - onB; {
		case j < 0:
		case j < onA/2:
			d.group, d.urls = groupReturner, []string{a.WSURL, b.WSURL}
		case j < onA*3/4:
			d.group, d.urls = groupLate, []string{a.WSURL}
		default:
			d.group, d.urls = groupStranded, []string{a.WSURL}
		}
		r.devs = append(r.devs, d)
	}
	t.Cleanup(r.closeAll)
	if err := r.dialAll(ctx, r.devs); err != nil {
		fail("connect: %v", err)
	}
	if missing := recs.waitConnected(ctx, time.Now().Add(chaosWait), r.presenceDevs(r.devs)); len(missing) > 0 {
		fail("no connected record within %v for %d devices, e.g. %s", chaosWait, len(missing), missing[0])
	}
	rctx, stopReports := context.WithCancel(ctx)
	defer stopReports()
	var reporters sync.WaitGroup
	for _, d := range r.devs {
		reporters.Go(func() { r.reportLoop(rctx, d) })
	}
	if err := r.awaitAcks(ctx, r.devs, time.Time{}, chaosWarmAcks, chaosWait); err != nil {
		fail("before the faults: %v", err)
	}
	phase("connect")

	// 2. Kill A. The returners go to B at once, the late ones just within
	// the grace; the stranded devices get node_lost, then come back.
	r.setPhase("node kill")
	killAt := time.Now()
	a.Kill()
	deadAt := time.Now() // no ack can come from A after this
	late, stranded, returners := r.group(groupLate), r.group(groupStranded), r.group(groupReturner)
	lateDone := make(chan error, 1)
	go func() {
		if err := sleepCtx(ctx, time.Until(killAt.Add(chaosGrace-chaosLateMargin))); err != nil {
			lateDone <- err
			return
		}
		lateDone <- r.moveAll(ctx, late, b.WSURL)
	}()
	if err := r.awaitAcks(ctx, returners, deadAt, 1, chaosWait); err != nil {
		errorf("returners after the kill: %v", err)
	}
	rep.ReturnedMaxMs = r.firstAckAfter(returners, killAt)
	if err := <-lateDone; err != nil {
		errorf("late returners: %v", err)
	}
	for _, d := range late {
		rep.LateBackMaxMs = max(rep.LateBackMaxMs, ms(d.back.Sub(killAt)))
	}
	nodeLost := func(l []presenceRecord) bool {
		return slices.ContainsFunc(l, func(x presenceRecord) bool { return !x.Online && x.Reason == fhub.ReasonNodeLost })
	}
	if missing := recs.waitFor(ctx, killAt.Add(chaosNodeLostWait), nodeLost, r.presenceDevs(stranded)); len(missing) > 0 {
		errorf("no node_lost record within %v of the kill for %d of %d stranded devices, e.g. %s", chaosNodeLostWait, len(missing), len(stranded), missing[0])
	}
	rep.NodeLostMinMs, rep.NodeLostMaxMs = r.nodeLostLatency(recs, stranded, killAt)
	if err := r.moveAll(ctx, stranded, b.WSURL); err != nil {
		errorf("stranded devices coming back: %v", err)
	}
	connectedTwice := func(l []presenceRecord) bool {
		return len(slices.DeleteFunc(slices.Clone(l), func(x presenceRecord) bool { return !x.Online })) >= 2
	}
	if missing := recs.waitFor(ctx, time.Now().Add(chaosWait), connectedTwice, r.presenceDevs(stranded)); len(missing) > 0 {
		errorf("no second connected record for %d stranded devices, e.g. %s", len(missing), missing[0])
	}
	if err := r.awaitAcks(ctx, r.devs, time.Now(), chaosRecoverAcks, chaosWait); err != nil {
		errorf("after the node kill: %v", err)
	}
	phase("node kill")

	// 3. Kill the nats-server, hold it down, start it again.
	r.setPhase("nats restart")
	natsKillAt := time.Now()
	ns.Kill()
	if err := awaitCond(ctx, chaosWait, 50*time.Millisecond, func() error { return r.health(ctx, b, false) }); err != nil {
		errorf("ck-b with the nats-server down: %v", err)
	}
	rep.HealthDownMs = ms(time.Since(natsKillAt))
	if err := sleepCtx(ctx, down); err != nil {
		fail("holding the nats-server down: %v", err)
	}
	if err := ns.Start(ctx); err != nil {
		fail("restart nats-server: %v", err)
	}
	restartAt := time.Now()
	rep.NATSOutageMs = ms(restartAt.Sub(natsKillAt))
	if err := awaitCond(ctx, chaosWait, 50*time.Millisecond, func() error { return r.health(ctx, b, true) }); err != nil {
		errorf("ck-b after the nats-server restart: %v", err)
	}
	if err := r.awaitAcks(ctx, r.devs, restartAt, chaosRecoverAcks, chaosRecoverWait); err != nil {
		errorf("after the nats-server restart: %v", err)
	}
	rep.RecoveredMs = ms(time.Since(restartAt))
	if err := awaitCond(ctx, chaosWait, 50*time.Millisecond, func() error {
		if !nc.IsConnected() {
			return errors.New("the test's NATS connection has not reconnected")
		}
		return nil
	}); err != nil {
		errorf("%v", err)
	}
	phase("nats restart")

	// 4. Everyone leaves.
	r.setPhase("close")
	stopReports()
	reporters.Wait()
	r.closeAll()
	want := func(d *chaosDev) int {
		if d.group == groupStranded {
			return 2
		}
		return 1
	}
	if err := awaitCond(ctx, chaosOfflineWait, 100*time.Millisecond, func() error {
		short, eg := 0, ""
		for _, d := range r.devs {
			if got := offlineCount(recs.of(d.sn)); got < want(d) {
				short++
				eg = fmt.Sprintf("%s (%s) has %d, wants %d", d.sn, d.group, got, want(d))
			}
		}
		if short > 0 {
			return fmt.Errorf("%d devices miss their last offline record, e.g. %s", short, eg)
		}
		return nil
	}); err != nil {
		errorf("after closing: %v", err)
	}
	phase("close")

	// Judge what the streams hold.
	js, err := jetstream.New(nc)
	if err != nil {
		fail("jetstream: %v", err)
	}
	if m := r.ledger.MaxSent(KindStatus); m > chaosHistory {
		errorf("a device sent %d reports, more than the %d HUB_STATUS keeps", m, chaosHistory)
	}
	if rep.Records, err = checkRecords(ctx, js, r.ledger, "ck-", errorf); err != nil {
		fail("read records: %v", err)
	}
	hist, bad, err := PresenceHistories(ctx, js)
	if err != nil {
		fail("read HUB_PRESENCE: %v", err)
	}
	if bad > 0 {
		errorf("%d undecodable records in HUB_PRESENCE", bad)
	}
	for _, g := range []string{groupSteady, groupReturner, groupLate, groupStranded} {
		cg := r.judge(g, hist, killAt)
		rep.Groups = append(rep.Groups, cg)
		if cg.Wrong > 0 {
			errorf("%s: %d of %d presence histories wrong, e.g. %s", g, cg.Wrong, cg.Devices, strings.Join(cg.Anomalies[:min(3, len(cg.Anomalies))], "; "))
		}
	}
	for _, h := range hist {
		rep.PresenceTotal += len(h)
	}
	if rep.NodeLostMinMs > 0 && rep.NodeLostMinMs < ms(chaosGrace) {
		errorf("a node_lost record came %.0f ms after the kill, before the %v grace", rep.NodeLostMinMs, chaosGrace)
	}
	if exited, werr := b.Exited(); exited {
		errorf("ck-b exited during the test: %v", werr)
	}
}

// chaosRun is the state of one chaos run.
type chaosRun struct {
	rep    *ChaosReport
	nodes  []*Hub
	devs   []*chaosDev
	ledger *Ledger
	errs   errCounts

	mu    sync.Mutex
	phase string         // Guarded by mu.
	drops map[string]int // sessions ended by the hub or the network, by phase. Guarded by mu.
}

// chaosDev is one device.
type chaosDev struct {
	sn, group string
	urls      []string
	back      time.Time // when it was authenticated on B after the kill (late, stranded)

	mu   sync.Mutex
	c    *client.Client // the current client. Guarded by mu.
	acks []time.Time    // when each report was acknowledged. Guarded by mu.
}

func (d *chaosDev) client() *client.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

func (d *chaosDev) acked(at time.Time) {
	d.mu.Lock()
	d.acks = append(d.acks, at)
	d.mu.Unlock()
}

// ackedAfter returns how many reports were acknowledged after t, and the
// first such time.
func (d *chaosDev) ackedAfter(t time.Time) (int, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, _ := slices.BinarySearchFunc(d.acks, t, func(a, t time.Time) int { return a.Compare(t) })
	if i == len(d.acks) {
		return 0, time.Time{}
	}
	return len(d.acks) - i, d.acks[i]
}

func (r *chaosRun) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
}

// onState counts, per phase, sessions that ended other than by the test's
// own Close.
func (r *chaosRun) onState() func(client.State) {
	return sessionEnds(func(client.State) {
		r.mu.Lock()
		if r.drops == nil {
			r.drops = map[string]int{}
		}
		r.drops[r.phase]++
		r.mu.Unlock()
	})
}

func (r *chaosRun) group(g string) []*chaosDev {
	var out []*chaosDev
	for _, d := range r.devs {
		if d.group == g {
			out = append(out, d)
		}
	}
	return out
}

// presenceDevs adapts devices to the presence watcher's waits.
func (r *chaosRun) presenceDevs(devs []*chaosDev) []*presenceDev {
	out := make([]*presenceDev, len(devs))
	for i, d := range devs {
		out[i] = &presenceDev{sn: d.sn}
	}
	return out
}

// dialAll connects devs on their URLs, chaosDialers at a time.
func (r *chaosRun) dialAll(ctx context.Context, devs []*chaosDev) error {
	return forEach(devs, func(d *chaosDev) error {
		c, err := dialDevice(ctx, d.sn, d.urls, r.onState())
		if err != nil {
			return fmt.Errorf("%s: %w", d.sn, err)
		}
		d.mu.Lock()
		d.c = c
		d.mu.Unlock()
		return nil
	})
}

// moveAll closes each device's client and connects it again on url only.
func (r *chaosRun) moveAll(ctx context.Context, devs []*chaosDev, url string) error {
	return forEach(devs, func(d *chaosDev) error {
		if old := d.client(); old != nil {
			_ = old.Close()
		}
		c, err := dialDevice(ctx, d.sn, []string{url}, r.onState())
		if err != nil {
			return fmt.Errorf("%s: %w", d.sn, err)
		}
		d.mu.Lock()
		d.c, d.back = c, time.Now()
		d.mu.Unlock()
		return nil
	})
}

// forEach runs f on every device, chaosDialers at a time, and returns the
// first error.
func forEach(devs []*chaosDev, f func(*chaosDev) error) error {
	next := make(chan *chaosDev)
	errs := make(chan error, len(devs))
	var wg sync.WaitGroup
	for range min(chaosDialers, len(devs)) {
		wg.Go(func() {
			for d := range next {
				if err := f(d); err != nil {
					errs <- err
				}
			}
		})
	}
	for _, d := range devs {
		next <- d
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs // nil when there was none
}

// closeAll closes every device's client.
func (r *chaosRun) closeAll() {
	_ = forEach(r.devs, func(d *chaosDev) error {
		if c := d.client(); c != nil {
			_ = c.Close()
		}
		return nil
	})
}

// reportLoop reports d's status every chaosPace until ctx ends, on
// whichever client d has at the time.
func (r *chaosRun) reportLoop(ctx context.Context, d *chaosDev) {
	for ctx.Err() == nil {
		if err := report(ctx, d.client(), r.ledger, d.sn, KindStatus); err == nil {
			d.acked(time.Now())
		} else if ctx.Err() == nil {
			r.mu.Lock()
			p := r.phase
			r.mu.Unlock()
			r.errs.add(p+" "+d.group, err)
		}
		if !pause(ctx, chaosPace) {
			return
		}
	}
}

// awaitAcks waits until every device of devs has k acknowledged reports
// after since.
func (r *chaosRun) awaitAcks(ctx context.Context, devs []*chaosDev, since time.Time, k int, timeout time.Duration) error {
	return awaitCond(ctx, timeout, 50*time.Millisecond, func() error {
		short, eg := 0, ""
		for _, d := range devs {
			if got, _ := d.ackedAfter(since); got < k {
				short++
				eg = fmt.Sprintf("%s (%s) has %d", d.sn, d.group, got)
			}
		}
		if short > 0 {
			return fmt.Errorf("%d of %d devices have fewer than %d acknowledged reports since %s, e.g. %s",
				short, len(devs), k, since.Format("15:04:05.000"), eg)
		}
		return nil
	})
}

// firstAckAfter returns the longest time from t to a device's first ack
// after it, in ms.
func (r *chaosRun) firstAckAfter(devs []*chaosDev, t time.Time) float64 {
	worst := 0.0
	for _, d := range devs {
		if n, first := d.ackedAfter(t); n > 0 {
			worst = max(worst, ms(first.Sub(t)))
		}
	}
	return worst
}

// nodeLostLatency returns the earliest and latest arrival of the stranded
// devices' node_lost records after the kill, in ms.
func (r *chaosRun) nodeLostLatency(recs *presenceRecords, devs []*chaosDev, killAt time.Time) (lo, hi float64) {
	for _, d := range devs {
		for _, x := range recs.of(d.sn) {
			if !x.Online && x.Reason == fhub.ReasonNodeLost {
				l := ms(x.arrived.Sub(killAt))
				if lo == 0 || l < lo {
					lo = l
				}
				hi = max(hi, l)
				break
			}
		}
	}
	return lo, hi
}

// health waits for one answer of /healthz and says whether it is what is
// wanted: 200 (up) or anything else (down).
func (r *chaosRun) health(ctx context.Context, h *Hub, up bool) error {
	code, err := h.healthCode(ctx)
	if err != nil {
		return err
	}
	if (code == http.StatusOK) != up {
		return fmt.Errorf("/healthz answered %d", code)
	}
	return nil
}

// judge checks the presence histories of one group of devices.
func (r *chaosRun) judge(g string, hist map[string][]fhub.PresenceRecord, killAt time.Time) *ChaosGroup {
	cg := &ChaosGroup{Group: g}
	note := func(format string, args ...any) {
		if len(cg.Anomalies) < chaosSample {
			cg.Anomalies = append(cg.Anomalies, fmt.Sprintf(format, args...))
		}
	}
	for _, d := range r.group(g) {
		cg.Devices++
		h := hist[d.sn]
		if _, err := CheckAlternation(h); err != nil {
			cg.Wrong++
			note("%s: %v", d.sn, err)
			continue
		}
		want := []fhub.Reason{fhub.ReasonConnected, fhub.ReasonClosed}
		if g == groupStranded {
			want = []fhub.Reason{fhub.ReasonConnected, fhub.ReasonNodeLost, fhub.ReasonConnected, fhub.ReasonClosed}
		}
		if g == groupLate && d.back.Sub(killAt) >= chaosGrace {
			cg.TooLate++ // back after the grace: node_lost is allowed
			continue
		}
		ok := len(h) == len(want)
		for i := 0; ok && i < len(h); i++ {
			ok = h[i].Reason == want[i] && (want[i] != fhub.ReasonNodeLost || h[i].Node == chaosIDs[0])
		}
		if !ok {
			cg.Wrong++
			note("%s: %s, want %v", d.sn, DescribeHistory(h), want)
			continue
		}
		cg.Correct++
	}
	return cg
}

// logChaosReport prints the report as a few lines.
func logChaosReport(t *testing.T, r *ChaosReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfleethub chaos: %s, %d CPUs, %d devices, 2 node processes on one nats-server process; %.1fs in all (phases %v)\n",
		r.GoVersion, r.NumCPU, r.Devices, r.Seconds, r.PhaseSeconds)
	fmt.Fprintf(&b, "node kill: returners back on ck-b within %.0f ms, late returners at %.0f ms; node_lost %.0f to %.0f ms after the kill (grace %v, node TTL %v)\n",
		r.ReturnedMaxMs, r.LateBackMaxMs, r.NodeLostMinMs, r.NodeLostMaxMs, chaosGrace, chaosNodeTTL)
	fmt.Fprintf(&b, "nats-server kill: ck-b unhealthy after %.0f ms, down %.0f ms (hold %s), every device acknowledged again %.0f ms after the restart\n",
		r.HealthDownMs, r.NATSOutageMs, r.NATSDown, r.RecoveredMs)
	rc := r.Records
	fmt.Fprintf(&b, "records: sent %d, acked %d, stored %d (stored unacked %d), acked missing %d\n",
		rc.Sent[KindStatus], rc.Acked[KindStatus], rc.Stored[KindStatus], rc.StoredUnacked[KindStatus], rc.Missing)
	fmt.Fprintf(&b, "%-9s %7s %7s %5s %8s\n", "group", "devices", "correct", "wrong", "too late")
	for _, g := range r.Groups {
		fmt.Fprintf(&b, "%-9s %7d %7d %5d %8d\n", g.Group, g.Devices, g.Correct, g.Wrong, g.TooLate)
	}
	fmt.Fprintf(&b, "presence records %d; sessions ended by the hub or the network, by phase: %s\n", r.PresenceTotal, fmtCounts(r.SessionDrops))
	fmt.Fprintf(&b, "failed reports (allowed during faults): %s\n", fmtCounts(r.Errors))
	fmt.Fprintf(&b, "hub WARN/ERROR lines %v\n", r.HubLogProblems)
	for _, l := range r.HubLogSample {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, g := range r.Groups {
		for _, a := range g.Anomalies {
			fmt.Fprintf(&b, "%s: %s\n", g.Group, a)
		}
	}
	for _, e := range r.Failures {
		fmt.Fprintf(&b, "ERROR: %s\n", e)
	}
	t.Log(b.String())
}
