//go:build load

// TestSoak is a bounded churn soak of two node processes on one external
// nats-server process. `make soak` runs it for 30 minutes; `make load` runs
// the short form (SOAK_DURATION unset: 2 minutes):
//
//	SOAK_DURATION=30m SOAK_DEVICES=150 SOAK_ADMINS=4 LOAD_REPORT=/tmp/soak.json \
//	  go test -count=1 -tags load -run TestSoak -v -timeout 60m ./internal/loadtest
//
// Nodes sk-a and sk-b join a nats-server built from the module go.mod pins,
// with its file store in a temporary directory. Devices and admins are SDK
// clients (package client), each on a node picked at random every time it
// connects:
//   - a device sends 1 to 8 reports per session (one in five an event,
//     the rest status), each carrying a content id and awaited, 400 ms to
//     1.2 s apart; then it closes and comes back within 1 s (60%: no
//     presence record may follow), or closes and stays away until its
//     offline record is in (20%: one connected record follows when it
//     returns), or is replaced by a second session (20%: the first ends
//     with 4001, no record);
//   - an admin logs in, subscribes 1 to 4 times to a random selector (all,
//     a few devices, a type) and random topics (presence, status, event,
//     summary), holds each 0.5 to 3 s, unsubscribes, and logs out.
//
// A 20 s warm-up, in which every device connects, comes first; then every
// client leaves and, once the nodes hold no session and every offline
// record is in, the baseline is taken. The churn then runs for
// SOAK_DURATION, every client leaves again, and the same figures must
// return to the baseline within 90 s, within these tolerances per node:
// goroutines +5, open files +5 (/proc/<pid>/fd), heap in use +25% or
// +4 MiB, whichever is larger. Both the baseline and the end are taken after
// a garbage collection forced through /debug/pprof/heap?gc=1 (the nodes run
// with --pprof), so the heap is the live heap; peaks are sampled every 5 s
// without one.
//
// Then every acknowledged report (code 0 answer) must be in HUB_STATUS or
// HUB_EVENTS, found by its content id. The streams keep a bounded number
// of records per device (--status-history, --event-history): the nodes get
// a bound no device can exceed at the pace above (one report per 400 ms
// over the whole run), so nothing acknowledged is aged out, and the test
// checks that no device sent more. Each device's history in HUB_PRESENCE
// must alternate strictly (connected, offline, connected, ...), end
// offline, every offline record of reason closed, and hold as many offline
// records as the device's long absences and phase ends; a quick return that
// took longer than grace - 1 s (a loaded machine) may add one. Any failed
// dial, report, subscribe or unsubscribe, or unexpected disconnect, fails
// the test too: no fault is injected.

package loadtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/client"
	fhub "github.com/fleethub/fleethub/hub"
	"github.com/nats-io/nats.go/jetstream"
)

// Parameters and bounds of the soak.
const (
	soakDefaultDuration = 2 * time.Minute
	soakMaxDuration     = 3 * time.Hour // keeps every presence history under HUB_PRESENCE's 1,000 per device
	soakDefaultDevices  = 150
	soakMaxDevices      = 2000
	soakDefaultAdmins   = 4
	soakWarmup          = 20 * time.Second
	soakGrace           = 5 * time.Second // --offline-grace, cmd/hub's default, passed explicitly
	soakPaceMin         = 400 * time.Millisecond
	soakPaceMax         = 1200 * time.Millisecond
	soakMaxReports      = 8
	soakShortGapMax     = time.Second
	soakAmbiguousGap    = soakGrace - time.Second // a quick return slower than this may see an offline record
	soakReplaceWait     = 10 * time.Second        // for the replaced session to end
	soakOfflineWait     = soakGrace + 30*time.Second
	soakSessionsWait    = 30 * time.Second
	soakBaselineWait    = 30 * time.Second
	soakReturnWait      = 90 * time.Second
	soakSampleEvery     = 5 * time.Second
	soakTolGoroutines   = 5
	soakTolFDs          = 5
	soakTolHeapFrac     = 0.25
	soakTolHeapMiB      = 4.0
	soakPresenceKeep    = 1000 // HUB_PRESENCE's records per device
	soakSample          = 10   // anomalies kept
)

var soakIDs = []string{"sk-a", "sk-b"}

// SoakNode is one node's figures.
type SoakNode struct {
	Node     string    `json:"node"`
	Baseline Resources `json:"baseline"`
	Peak     Resources `json:"peak"` // the largest of each figure, sampled every 5 s
	End      Resources `json:"end"`
	Returned bool      `json:"returned"`
}

// SoakReport is the whole run's outcome, written as JSON to LOAD_REPORT.
type SoakReport struct {
	Start           time.Time      `json:"start"`
	GoVersion       string         `json:"go_version"`
	NumCPU          int            `json:"num_cpu"`
	Duration        string         `json:"duration"`
	Devices         int            `json:"devices"`
	Admins          int            `json:"admins"`
	History         int            `json:"records_kept_per_device"`
	DeviceConnects  int64          `json:"device_connects"`
	AdminConnects   int64          `json:"admin_connects"`
	QuickReturns    int64          `json:"quick_returns"`
	LongAbsences    int64          `json:"long_absences"`
	Replaced        int64          `json:"replaced"`
	Ambiguous       int64          `json:"slow_quick_returns"`
	Subscribes      int64          `json:"subscribes"`
	Unsubscribes    int64          `json:"unsubscribes"`
	Pushes          map[string]int `json:"admin_pushes"`
	Records         LedgerCheck    `json:"records"`
	PresenceRecords int            `json:"presence_records"`
	PresenceBad     int            `json:"presence_undecodable"`
	NotAlternating  int            `json:"histories_not_alternating"`
	WrongCount      int            `json:"histories_wrong_offline_count"`
	PresenceSample  []string       `json:"presence_sample,omitempty"`
	Errors          map[string]int `json:"client_errors"`
	ErrorSample     []string       `json:"client_error_sample,omitempty"`
	AnomalyCount    int            `json:"anomaly_count"`
	Anomalies       []string       `json:"anomalies,omitempty"`
	Nodes           []*SoakNode    `json:"nodes"`
	NATSPeakFDs     int            `json:"nats_server_peak_fds"`
	NATSPeakRSSMiB  float64        `json:"nats_server_peak_rss_mib"`
	HubLogProblems  map[string]int `json:"hub_log_warn_error_lines"`
	HubLogSample    []string       `json:"hub_log_sample,omitempty"`
	Seconds         float64        `json:"seconds"`
	ChurnSeconds    float64        `json:"churn_seconds"`
	SettleSeconds   float64        `json:"return_to_baseline_seconds"`
	VerifySeconds   float64        `json:"verify_seconds"`
	FailureMessages []string       `json:"errors,omitempty"`
}

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak skipped in -short mode")
	}
	dur := envDuration(t, "SOAK_DURATION", soakDefaultDuration)
	nDev := envInt(t, "SOAK_DEVICES", soakDefaultDevices)
	nAdm := envInt(t, "SOAK_ADMINS", soakDefaultAdmins)
	if dur < 10*time.Second || dur > soakMaxDuration {
		t.Fatalf("SOAK_DURATION=%v: want 10s to %v", dur, soakMaxDuration)
	}
	if nDev < 1 || nDev > soakMaxDevices || nAdm < 0 || nAdm > 100 {
		t.Fatalf("SOAK_DEVICES=%d, SOAK_ADMINS=%d: want 1 to %d devices and 0 to 100 admins", nDev, nAdm, soakMaxDevices)
	}
	ctx, cancel := testContext(t, dur+soakWarmup+15*time.Minute)
	defer cancel()

	// Every report is at least soakPaceMin after the device's previous
	// one, so no device can send more than this over the run (the settle
	// phases included): the streams keep that many per device.
	history := int((soakWarmup+dur+2*soakOfflineWait)/soakPaceMin) + 10
	start := time.Now()
	rep := &SoakReport{
		Start: start, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), Duration: dur.String(),
		Devices: nDev, Admins: nAdm, History: history, HubLogProblems: map[string]int{},
	}
	r := &soakRun{rep: rep, ledger: NewLedger(), nAdmins: nAdm, pushes: map[string]int{}}
	defer func() {
		noteLogs(t, soakIDs, r.nodes, rep.HubLogProblems, &rep.HubLogSample)
		rep.Errors, rep.ErrorSample = r.errs.snapshot()
		rep.Pushes = r.pushCounts()
		rep.AnomalyCount, rep.Anomalies = r.anomalyList()
		rep.Seconds = time.Since(start).Seconds()
		logSoakReport(t, rep)
		writeReport(t, rep)
	}()
	fail, errorf := failures(t, &rep.FailureMessages)

	// The nats-server process, the presence watcher, then the nodes.
	// Cleanups run in reverse: clients close, nodes stop, NATS stops.
	rg, err := startRig(ctx, t, "soak")
	if err != nil {
		fail("%v", err)
	}
	ns, nc := rg.ns, rg.nc
	r.recs = rg.recs
	r.nodes, err = startNodes(ctx, t, rg.hubBin, ns.URL, soakIDs, "--pprof", "--offline-grace", soakGrace.String(),
		"--pong-wait", "15s", "--ping-interval", "10s",
		"--status-history", strconv.Itoa(history), "--event-history", strconv.Itoa(history))
	if err != nil {
		fail("%v", err)
	}
	for _, h := range r.nodes {
		r.urls = append(r.urls, h.WSURL)
	}
	for i := range nDev {
		r.devs = append(r.devs, &soakDev{sn: "sk-" + strconv.Itoa(i), rng: rand.New(rand.NewPCG(uint64(i), 1))})
	}

	// Warm-up, then the baseline with no client left.
	r.churn(ctx, soakWarmup)
	if err := r.settle(ctx); err != nil {
		fail("after the warm-up: %v", err)
	}
	base, err := r.baseline(ctx)
	if err != nil {
		fail("baseline: %v", err)
	}
	for i, b := range base {
		rep.Nodes = append(rep.Nodes, &SoakNode{Node: soakIDs[i], Baseline: b, Peak: b})
	}
	t.Logf("warm-up done in %.1fs: %d device and %d admin connects; baseline %s",
		time.Since(start).Seconds(), r.deviceConnects.Load(), r.adminConnects.Load(), fmtResources(base))

	// The churn, with peaks sampled meanwhile.
	churnAt := time.Now()
	sctx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() { r.samplePeaks(sctx, ns) })
	r.churn(ctx, dur)
	stopSampling()
	sampler.Wait()
	rep.ChurnSeconds = time.Since(churnAt).Seconds()
	r.fillCounts()
	t.Logf("churn done in %.1fs: %d device connects, %d acked reports", rep.ChurnSeconds, rep.DeviceConnects, r.ledgerAcked())

	// Everyone has left: back to the baseline.
	settleAt := time.Now()
	if err := r.settle(ctx); err != nil {
		errorf("after the churn: %v", err)
	}
	if err := r.returnToBaseline(ctx); err != nil {
		errorf("resources: %v", err)
	}
	rep.SettleSeconds = time.Since(settleAt).Seconds()

	// Records and presence histories.
	verifyAt := time.Now()
	js, err := jetstream.New(nc)
	if err != nil {
		fail("jetstream: %v", err)
	}
	if m := max(r.ledger.MaxSent(KindStatus), r.ledger.MaxSent(KindEvent)); m > history {
		errorf("a device sent %d reports of one kind, more than the %d the streams keep: the check below may miss none legitimately aged out", m, history)
	}
	if rep.Records, err = checkRecords(ctx, js, r.ledger, "sk-", errorf); err != nil {
		fail("read records: %v", err)
	}
	r.judgePresence(ctx, js)
	if rep.NotAlternating > 0 || rep.WrongCount > 0 || rep.PresenceBad > 0 {
		errorf("presence: %d of %d histories do not alternate strictly, %d have the wrong number of offline records, %d undecodable records; e.g. %s",
			rep.NotAlternating, nDev, rep.WrongCount, rep.PresenceBad, strings.Join(rep.PresenceSample[:min(3, len(rep.PresenceSample))], "; "))
	}
	rep.VerifySeconds = time.Since(verifyAt).Seconds()

	if n := r.errs.total(); n > 0 {
		m, sample := r.errs.snapshot()
		errorf("%d client requests failed (%s), e.g. %s", n, fmtCounts(m), strings.Join(sample[:min(3, len(sample))], "; "))
	}
	if n, sample := r.anomalyList(); n > 0 {
		errorf("%d anomalies, e.g. %s", n, strings.Join(sample[:min(3, len(sample))], "; "))
	}
	for i, h := range r.nodes {
		if exited, werr := h.Exited(); exited {
			errorf("%s exited during the soak: %v", soakIDs[i], werr)
		}
	}
}

// soakRun is the state of one soak.
type soakRun struct {
	rep     *SoakReport
	nodes   []*Hub
	urls    []string
	recs    *presenceRecords
	ledger  *Ledger
	devs    []*soakDev
	nAdmins int
	errs    errCounts // failed requests and dials: none is expected

	deviceConnects, adminConnects    atomic.Int64
	quick, long, replaced, ambiguous atomic.Int64
	subscribes, unsubscribes         atomic.Int64

	mu        sync.Mutex
	pushes    map[string]int // by service. Guarded by mu.
	anomalies []string       // the first few. Guarded by mu.
	anomalyN  int            // Guarded by mu.
}

// soakDev is one device. Its fields are owned by its goroutine while a
// phase runs, and read by the test between phases.
type soakDev struct {
	sn            string
	rng           *rand.Rand
	expectOffline int        // offline records it must have by now
	ambiguous     int        // quick returns slow enough that an offline record may have come
	steps         []soakStep // its last soakSteps steps, for a report
}

// soakStep is one step of a device: connected, closed, ...
type soakStep struct {
	at   time.Time
	what string
}

// soakSteps is how many steps of a device are kept for a report.
const soakSteps = 5000

// note logs a step of the device.
func (d *soakDev) note(format string, args ...any) {
	if len(d.steps) == soakSteps {
		d.steps = d.steps[1:]
	}
	d.steps = append(d.steps, soakStep{time.Now(), fmt.Sprintf(format, args...)})
}

// stepsAround lists the device's steps from 2 s before from to 2 s after
// to, stamped in UTC like presence records.
func (d *soakDev) stepsAround(from, to time.Time) string {
	var parts []string
	for _, s := range d.steps {
		if !s.at.Before(from.Add(-2*time.Second)) && !s.at.After(to.Add(2*time.Second)) {
			parts = append(parts, s.at.UTC().Format("15:04:05.000")+" "+s.what)
		}
	}
	return strings.Join(parts, "; ")
}

func (r *soakRun) anomaly(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.anomalyN++
	if len(r.anomalies) < soakSample {
		r.anomalies = append(r.anomalies, fmt.Sprintf(format, args...))
	}
}

func (r *soakRun) anomalyList() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.anomalyN, append([]string(nil), r.anomalies...)
}

func (r *soakRun) onPush(p client.Push) {
	r.mu.Lock()
	r.pushes[p.Service]++
	r.mu.Unlock()
}

func (r *soakRun) pushCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.pushes)
}

func (r *soakRun) ledgerAcked() int {
	c := r.ledger.Check([numKinds]map[string]bool{})
	return c.Acked[KindStatus] + c.Acked[KindEvent]
}

func (r *soakRun) fillCounts() {
	rep := r.rep
	rep.DeviceConnects, rep.AdminConnects = r.deviceConnects.Load(), r.adminConnects.Load()
	rep.QuickReturns, rep.LongAbsences, rep.Replaced, rep.Ambiguous = r.quick.Load(), r.long.Load(), r.replaced.Load(), r.ambiguous.Load()
	rep.Subscribes, rep.Unsubscribes = r.subscribes.Load(), r.unsubscribes.Load()
}

// onDeviceState notes a device session that ended other than by the
// test's own Close or a replacement (4001): with no fault injected, none
// should.
func (r *soakRun) onDeviceState(sn string) func(client.State) {
	return sessionEnds(func(s client.State) {
		if s.CloseCode != 4001 {
			r.anomaly("%s: session on %s ended with %d: %v", sn, s.URL, s.CloseCode, s.Err)
		}
	})
}

// churn runs every device and admin until d has passed; each then leaves.
func (r *soakRun) churn(ctx context.Context, d time.Duration) {
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, dv := range r.devs {
		wg.Go(func() { r.runDevice(ctx, dv, end) })
	}
	for i := range r.nAdmins {
		wg.Go(func() { r.runAdmin(ctx, i, end) })
	}
	wg.Wait()
}

// pause waits d unless ctx ends first; false means it has.
func pause(ctx context.Context, d time.Duration) bool { return sleepCtx(ctx, d) == nil }

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// connect dials d on a node at random, retrying (each failure counted)
// until it is in, the phase ends or ctx does.
func (r *soakRun) connect(ctx context.Context, d *soakDev, end time.Time) *client.Client {
	for {
		url := r.urls[d.rng.IntN(len(r.urls))]
		c, err := dialDevice(ctx, d.sn, []string{url}, r.onDeviceState(d.sn))
		if err == nil {
			r.deviceConnects.Add(1)
			s := c.Session()
			d.note("connected on %s, session %s", s.Node, s.ID)
			return c
		}
		d.note("dial %s failed: %v", url, err)
		r.errs.add("device dial", err)
		if !pause(ctx, 500*time.Millisecond) || time.Now().After(end) {
			return nil
		}
	}
}

// runDevice is one device's life for a phase: sessions of reports, each
// ended one of three ways, until the phase ends; then it leaves.
func (r *soakRun) runDevice(ctx context.Context, d *soakDev, end time.Time) {
	var c *client.Client
	defer func() {
		if c != nil {
			_ = c.Close()
			d.expectOffline++ // the phase's end
			d.note("closed: the phase ends")
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			if c = r.connect(ctx, d, end); c == nil {
				return
			}
		}
		for range 1 + d.rng.IntN(soakMaxReports) {
			if !pause(ctx, between(d.rng, soakPaceMin, soakPaceMax)) {
				return
			}
			k := KindStatus
			if d.rng.IntN(5) == 0 {
				k = KindEvent
			}
			if err := report(ctx, c, r.ledger, d.sn, k); err != nil {
				r.errs.add("report "+k.String(), err)
			}
		}
		if time.Now().After(end) {
			return
		}
		switch p := d.rng.IntN(100); {
		case p < 60: // a quick return: no record
			_ = c.Close()
			closed := time.Now()
			d.note("closed: quick return")
			c = nil
			if !pause(ctx, between(d.rng, 0, soakShortGapMax)) {
				return
			}
			if c = r.connect(ctx, d, end); c == nil {
				return
			}
			if time.Since(closed) >= soakAmbiguousGap {
				d.ambiguous++
				r.ambiguous.Add(1)
			}
			r.quick.Add(1)
		case p < 80: // a long absence: offline, then connected
			_ = c.Close()
			c = nil
			d.expectOffline++
			d.note("closed: away until offline")
			if err := r.awaitOffline(ctx, d); err != nil {
				r.anomaly("%s: after a close: %v", d.sn, err)
			}
			d.note("offline record seen")
			r.long.Add(1)
		default: // replaced by a second session: no record
			d.note("replacing")
			nc := r.connect(ctx, d, end)
			if nc == nil {
				return
			}
			select {
			case <-c.Done():
			case <-time.After(soakReplaceWait):
			case <-ctx.Done():
			}
			if err := c.Err(); !errors.Is(err, client.ErrReplaced) {
				r.anomaly("%s: first session not replaced by the second within %v: %v", d.sn, soakReplaceWait, err)
			}
			_ = c.Close()
			c = nc
			r.replaced.Add(1)
		}
	}
}

// awaitOffline waits until d has as many offline records as it must.
func (r *soakRun) awaitOffline(ctx context.Context, d *soakDev) error {
	return awaitCond(ctx, soakOfflineWait, 50*time.Millisecond, func() error {
		if n := offlineCount(r.recs.of(d.sn)); n < d.expectOffline {
			return fmt.Errorf("%d offline records, want %d", n, d.expectOffline)
		}
		return nil
	})
}

func offlineCount(l []presenceRecord) int {
	n := 0
	for _, x := range l {
		if !x.Online {
			n++
		}
	}
	return n
}

var soakTopics = []string{"presence", "status", "event", "summary"}

// selector is a random /admin/subscribe selector with random topics.
func (r *soakRun) selector(rng *rand.Rand) map[string]any {
	var topics []string
	for len(topics) == 0 {
		for _, tp := range soakTopics {
			if rng.IntN(2) == 0 {
				topics = append(topics, tp)
			}
		}
	}
	a := map[string]any{"topics": topics}
	switch rng.IntN(3) {
	case 0:
		a["all"] = true
	case 1:
		var sns []string
		for range 3 {
			sns = append(sns, r.devs[rng.IntN(len(r.devs))].sn)
		}
		a["devices"] = sns
	default:
		a["types"] = []string{DeviceType}
	}
	return a
}

// runAdmin is one admin's life for a phase: log in, subscribe and
// unsubscribe a few times, log out, until the phase ends.
func (r *soakRun) runAdmin(ctx context.Context, i int, end time.Time) {
	rng := rand.New(rand.NewPCG(uint64(i), 2))
	for first := true; first || time.Now().Before(end); first = false {
		if ctx.Err() != nil {
			return
		}
		c, err := dialAdmin(ctx, r.urls[rng.IntN(len(r.urls))], r.onPush)
		if err != nil {
			r.errs.add("admin login", err)
			if !pause(ctx, 500*time.Millisecond) {
				return
			}
			continue
		}
		r.adminConnects.Add(1)
		for range 1 + rng.IntN(4) {
			args := r.selector(rng)
			if _, err := c.Subscribe(ctx, args); err != nil {
				r.errs.add("subscribe", err)
			} else {
				r.subscribes.Add(1)
			}
			if !pause(ctx, between(rng, 500*time.Millisecond, 3*time.Second)) {
				break
			}
			if err := c.Unsubscribe(ctx, args); err != nil {
				r.errs.add("unsubscribe", err)
			} else {
				r.unsubscribes.Add(1)
			}
		}
		_ = c.Close()
		if !pause(ctx, between(rng, 0, time.Second)) {
			return
		}
	}
}

// settle waits until the nodes hold no session and every device has the
// offline records it must have.
func (r *soakRun) settle(ctx context.Context) error {
	err := awaitCond(ctx, soakSessionsWait, 200*time.Millisecond, func() error {
		for i, h := range r.nodes {
			n, err := sessions(ctx, h)
			if err != nil {
				return err
			}
			if n != 0 {
				return fmt.Errorf("%s holds %v sessions", soakIDs[i], n)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return awaitCond(ctx, soakOfflineWait, 100*time.Millisecond, func() error {
		short, eg := 0, ""
		for _, d := range r.devs {
			if n := offlineCount(r.recs.of(d.sn)); n < d.expectOffline {
				short++
				eg = fmt.Sprintf("%s has %d, wants %d", d.sn, n, d.expectOffline)
			}
		}
		if short > 0 {
			return fmt.Errorf("%d devices miss offline records (e.g. %s)", short, eg)
		}
		return nil
	})
}

// measure samples every node after a forced collection.
func (r *soakRun) measure(ctx context.Context) ([]Resources, error) {
	out := make([]Resources, len(r.nodes))
	for i, h := range r.nodes {
		var err error
		if out[i], err = resources(ctx, h, true); err != nil {
			return nil, fmt.Errorf("%s: %w", soakIDs[i], err)
		}
	}
	return out, nil
}

// baseline measures until two samples 1 s apart agree on every node's
// goroutines and open files, and returns the second.
func (r *soakRun) baseline(ctx context.Context) ([]Resources, error) {
	var prev, cur []Resources
	err := awaitCond(ctx, soakBaselineWait, time.Second, func() error {
		var err error
		prev = cur
		if cur, err = r.measure(ctx); err != nil {
			return err
		}
		if prev == nil {
			return errors.New("one sample so far")
		}
		for i := range cur {
			if cur[i].Goroutines != prev[i].Goroutines || cur[i].FDs != prev[i].FDs {
				return fmt.Errorf("%s still moving: %s then %s", soakIDs[i], fmtRes(prev[i]), fmtRes(cur[i]))
			}
		}
		return nil
	})
	return cur, err
}

// returnToBaseline waits until every node is back within tolerance.
func (r *soakRun) returnToBaseline(ctx context.Context) error {
	return awaitCond(ctx, soakReturnWait, 2*time.Second, func() error {
		cur, err := r.measure(ctx)
		if err != nil {
			return err
		}
		var bad []string
		for i, n := range r.rep.Nodes {
			n.End = cur[i]
			n.Peak = peak(n.Peak, cur[i])
			b := n.Baseline
			heapMax := b.HeapMiB + math.Max(b.HeapMiB*soakTolHeapFrac, soakTolHeapMiB)
			n.Returned = cur[i].Goroutines <= b.Goroutines+soakTolGoroutines && cur[i].FDs <= b.FDs+soakTolFDs && cur[i].HeapMiB <= heapMax
			if !n.Returned {
				bad = append(bad, fmt.Sprintf("%s at %s, baseline %s (allowed: goroutines <= %d, fds <= %d, heap <= %.1f MiB)",
					n.Node, fmtRes(cur[i]), fmtRes(b), b.Goroutines+soakTolGoroutines, b.FDs+soakTolFDs, heapMax))
			}
		}
		if len(bad) > 0 {
			return errors.New(strings.Join(bad, "; "))
		}
		return nil
	})
}

// samplePeaks samples the nodes (no forced collection) and the nats-server
// every 5 s until ctx ends, keeping the largest figures.
func (r *soakRun) samplePeaks(ctx context.Context, ns *NATS) {
	tick := time.NewTicker(soakSampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, h := range r.nodes {
			if res, err := resources(ctx, h, false); err == nil {
				r.rep.Nodes[i].Peak = peak(r.rep.Nodes[i].Peak, res)
			}
		}
		if fds, err := openFiles(ns.PID()); err == nil {
			r.rep.NATSPeakFDs = max(r.rep.NATSPeakFDs, fds)
		}
		if rss, err := RSS(ns.PID()); err == nil {
			r.rep.NATSPeakRSSMiB = math.Max(r.rep.NATSPeakRSSMiB, float64(rss)/1024)
		}
	}
}

func peak(a, b Resources) Resources {
	return Resources{Goroutines: max(a.Goroutines, b.Goroutines), FDs: max(a.FDs, b.FDs), HeapMiB: math.Max(a.HeapMiB, b.HeapMiB)}
}

// judgePresence checks every device's history in HUB_PRESENCE.
func (r *soakRun) judgePresence(ctx context.Context, js jetstream.JetStream) {
	rep := r.rep
	hist, bad, err := PresenceHistories(ctx, js)
	rep.PresenceBad = bad
	if err != nil {
		rep.PresenceSample = append(rep.PresenceSample, "read HUB_PRESENCE: "+err.Error())
		rep.NotAlternating = len(r.devs)
		return
	}
	note := func(format string, args ...any) {
		if len(rep.PresenceSample) < soakSample {
			rep.PresenceSample = append(rep.PresenceSample, fmt.Sprintf(format, args...))
		}
	}
	for _, d := range r.devs {
		h := hist[d.sn]
		rep.PresenceRecords += len(h)
		if len(h) >= soakPresenceKeep {
			note("%s: %d records, HUB_PRESENCE's limit: older ones are gone, shorten SOAK_DURATION", d.sn, len(h))
		}
		if i, err := CheckAlternation(h); err != nil {
			rep.NotAlternating++
			from := time.UnixMilli(h[max(0, i-2)].At)
			note("%s: %v; its steps meanwhile: %s", d.sn, err, d.stepsAround(from, time.UnixMilli(h[i].At)))
			continue
		}
		off := Offline(h)
		if len(h) == 0 || h[len(h)-1].Online || len(off) < d.expectOffline || len(off) > d.expectOffline+d.ambiguous {
			rep.WrongCount++
			note("%s: %d offline records, want %d (up to %d more for slow quick returns), ending offline: %s",
				d.sn, len(off), d.expectOffline, d.ambiguous, DescribeHistory(h))
			continue
		}
		for _, x := range off {
			if x.Reason != fhub.ReasonClosed {
				rep.WrongCount++
				note("%s: offline record of reason %q, want %q: %s", d.sn, x.Reason, fhub.ReasonClosed, DescribeHistory(h))
				break
			}
		}
	}
}

func fmtRes(x Resources) string {
	return fmt.Sprintf("%d goroutines, %d fds, heap %.1f MiB", x.Goroutines, x.FDs, x.HeapMiB)
}

func fmtResources(l []Resources) string {
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = soakIDs[i] + " " + fmtRes(x)
	}
	return strings.Join(parts, "; ")
}

// logSoakReport prints the report as a few lines.
func logSoakReport(t *testing.T, r *SoakReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfleethub soak: %s, %d CPUs, churn %s (+%v warm-up), %d devices, %d admins, 2 node processes on one nats-server process; %.1fs in all\n",
		r.GoVersion, r.NumCPU, r.Duration, soakWarmup, r.Devices, r.Admins, r.Seconds)
	fmt.Fprintf(&b, "connects: %d device, %d admin; quick returns %d (%d slower than %v), long absences %d, replaced %d; subscribes %d, unsubscribes %d\n",
		r.DeviceConnects, r.AdminConnects, r.QuickReturns, r.Ambiguous, soakAmbiguousGap, r.LongAbsences, r.Replaced, r.Subscribes, r.Unsubscribes)
	rc := r.Records
	fmt.Fprintf(&b, "records: status sent %d acked %d stored %d (stored unacked %d); event sent %d acked %d stored %d (stored unacked %d); acked missing %d; kept per device %d\n",
		rc.Sent[KindStatus], rc.Acked[KindStatus], rc.Stored[KindStatus], rc.StoredUnacked[KindStatus],
		rc.Sent[KindEvent], rc.Acked[KindEvent], rc.Stored[KindEvent], rc.StoredUnacked[KindEvent], rc.Missing, r.History)
	fmt.Fprintf(&b, "presence: %d records in HUB_PRESENCE, %d histories not alternating, %d with a wrong offline count, %d undecodable\n",
		r.PresenceRecords, r.NotAlternating, r.WrongCount, r.PresenceBad)
	fmt.Fprintf(&b, "admin pushes: %s\n", fmtCounts(r.Pushes))
	fmt.Fprintf(&b, "%-5s %-34s %-34s %-34s %s\n", "node", "baseline", "peak (no forced GC)", "end", "returned")
	for _, n := range r.Nodes {
		fmt.Fprintf(&b, "%-5s %-34s %-34s %-34s %v\n", n.Node, fmtResShort(n.Baseline), fmtResShort(n.Peak), fmtResShort(n.End), n.Returned)
	}
	fmt.Fprintf(&b, "(goroutines / open fds / heap in use MiB; tolerance goroutines +%d, fds +%d, heap +%.0f%% or +%.0f MiB)\n",
		soakTolGoroutines, soakTolFDs, soakTolHeapFrac*100, soakTolHeapMiB)
	fmt.Fprintf(&b, "nats-server peak: %d fds, RSS %.1f MiB; churn %.1fs, return to baseline %.1fs, verify %.1fs\n",
		r.NATSPeakFDs, r.NATSPeakRSSMiB, r.ChurnSeconds, r.SettleSeconds, r.VerifySeconds)
	fmt.Fprintf(&b, "client errors: %s; hub WARN/ERROR lines %v\n", fmtCounts(r.Errors), r.HubLogProblems)
	for _, l := range r.HubLogSample {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, s := range r.ErrorSample {
		fmt.Fprintf(&b, "client error: %s\n", s)
	}
	for _, s := range r.PresenceSample {
		fmt.Fprintf(&b, "presence: %s\n", s)
	}
	for _, s := range r.Anomalies {
		fmt.Fprintf(&b, "anomaly: %s\n", s)
	}
	for _, e := range r.FailureMessages {
		fmt.Fprintf(&b, "ERROR: %s\n", e)
	}
	t.Log(b.String())
}

func fmtResShort(x Resources) string {
	return fmt.Sprintf("%d / %d / %.1f", x.Goroutines, x.FDs, x.HeapMiB)
}
