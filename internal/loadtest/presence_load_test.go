//go:build load

// TestPresenceLoad measures how fast, and how exactly, three node processes
// on one NATS server report devices offline, at cmd/hub's default presence
// timings. Run it with -count=1:
//
//	PRESENCE_DEVICES=100 PRESENCE_RECONNECTS=10000 LOAD_REPORT=/tmp/presence.json \
//	  go test -count=1 -tags load -run TestPresenceLoad -v -timeout 10m ./internal/loadtest
//
// Nodes pl-a (A), pl-b (B) and pl-c (C) join an in-process nats-server. In
// one run:
//   - timeout: devices on B never answer a ping (their last sign of life is
//     the auth request); latency = offline record minus the auth request,
//     nominally pong wait + grace;
//   - closed: devices on A close their sockets all at once; latency =
//     offline record minus each device's close, nominally the grace;
//   - node_lost: C is killed with SIGKILL; latency = offline record minus
//     the kill;
//   - replaced: a few devices on A open a second session on B: the first is
//     closed with 4001 and no record follows;
//   - reconnects: devices on A close and at once reconnect, alternately to
//     the same node and to the other one (A, A, B, B, A, ...), and no
//     offline record may follow.
//
// The timeout devices are connected first and expire while closed and
// node_lost are measured (on other nodes); the reconnects run last, on A
// and B only, so that their load does not colour the latencies. Records are
// taken from a plain subscription on hub.presence.*, which sees every
// publication (the stream's de-duplication does not hide duplicates from
// it). Latency goals are reported, not enforced; a missing, duplicated or
// wrong record, or a false offline, fails the test.

package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fhub "github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
)

// cmd/hub's default presence timings, which this test measures. StartHub
// passes --pong-wait 60s and --ping-interval 30s of its own, so the
// keepalive defaults are passed back explicitly; grace, node TTL and
// presence TTL are left to cmd/hub.
const (
	presGrace        = 5 * time.Second
	presNodeTTL      = 5 * time.Second
	presPingInterval = 10 * time.Second
	presPongWait     = 15 * time.Second
	presTTL          = 2 * time.Minute
)

// Goals (reported, not enforced) and bounds of the run.
const (
	closedGoal   = presGrace + 250*time.Millisecond       // p99
	timeoutGoal  = presPongWait + presGrace + time.Second // p99
	nodeLostGoal = 10 * time.Second                       // max
	presBudget   = 4 * time.Minute                        // the whole test, build included
	presMaxDevs  = 3000                                   // 4 groups of devices per process of 20,000 files
	presReplaced = 5                                      // devices opened twice
	presDialers  = 16                                     // concurrent dials when connecting a group
	presChurners = 32                                     // reconnects in flight at once
	presDialWait = 10 * time.Second                       // one dial plus auth
	presAttempts = 3                                      // a failed reconnect is retried at once
	presDupWait  = 2 * time.Second                        // after the last record, to catch duplicates
	presWaitMore = 15 * time.Second                       // past a goal before a record counts as missing
	presSample   = 20                                     // anomalies logged per cause
)

// PresenceCause is what one cause of offline records measured.
type PresenceCause struct {
	Cause       string   `json:"cause"`
	Node        string   `json:"node"`
	Devices     int      `json:"devices"`
	Offline     int      `json:"offline"` // devices with an offline record of the right reason
	Missing     int      `json:"missing"`
	Duplicates  int      `json:"duplicates"` // records beyond [connected, offline]
	WrongReason int      `json:"wrong"`      // first offline record of another reason or node
	P50Ms       float64  `json:"p50_ms"`
	P99Ms       float64  `json:"p99_ms"`
	MaxMs       float64  `json:"max_ms"`
	NominalMs   float64  `json:"nominal_ms"` // the delay by design
	ExcessP50Ms float64  `json:"excess_p50_ms"`
	ExcessP99Ms float64  `json:"excess_p99_ms"`
	GoalStat    string   `json:"goal_stat"` // which figure the goal bounds
	GoalMs      float64  `json:"goal_ms"`
	GoalMet     bool     `json:"goal_met"`
	Correct     bool     `json:"correct"` // no missing, duplicate or wrong record
	Anomalies   []string `json:"anomalies,omitempty"`
}

// PresenceReconnects is what the reconnect churn measured.
type PresenceReconnects struct {
	Devices        int      `json:"devices"`
	Requested      int      `json:"requested"`
	Done           int      `json:"done"`
	SameNode       int      `json:"same_node"`
	OtherNode      int      `json:"other_node"`
	Seconds        float64  `json:"seconds"`
	PerSecond      float64  `json:"per_second"`
	GapP50Ms       float64  `json:"gap_p50_ms"` // close to the new session's auth answer
	GapP99Ms       float64  `json:"gap_p99_ms"`
	GapMaxMs       float64  `json:"gap_max_ms"`
	GapsOverGrace  int      `json:"gaps_over_grace"`
	Failed         int      `json:"failed_devices"` // could not reconnect; excluded from the count
	FalseOffline   int      `json:"false_offline"`
	ExtraConnected int      `json:"extra_connected"` // connected records after the first
	Anomalies      []string `json:"anomalies,omitempty"`
}

// PresenceReplaced is what the second sessions on another node caused.
type PresenceReplaced struct {
	Devices      int         `json:"devices"`
	CloseCodes   map[int]int `json:"first_session_close_codes"`
	ExtraRecords int         `json:"records_after_connected"`
	Anomalies    []string    `json:"anomalies,omitempty"`
}

// PresenceReport is the whole run's outcome, written as JSON to LOAD_REPORT.
type PresenceReport struct {
	Start          time.Time           `json:"start"`
	GoVersion      string              `json:"go_version"`
	NumCPU         int                 `json:"num_cpu"`
	Nodes          []string            `json:"nodes"`
	GraceMs        float64             `json:"grace_ms"`
	NodeTTLMs      float64             `json:"node_ttl_ms"`
	PingMs         float64             `json:"ping_interval_ms"`
	PongWaitMs     float64             `json:"pong_wait_ms"`
	PresenceTTLMs  float64             `json:"presence_ttl_ms"`
	Causes         []*PresenceCause    `json:"causes"`
	Replaced       *PresenceReplaced   `json:"replaced,omitempty"`
	Reconnects     *PresenceReconnects `json:"reconnects,omitempty"`
	Duplicates     int                 `json:"duplicates"`
	Unexpected     int                 `json:"unexpected_records"` // for serials the test never used
	Undecodable    int                 `json:"undecodable_records"`
	HubLogProblems map[string]int      `json:"hub_log_warn_error_lines"`
	HubLogSample   []string            `json:"hub_log_sample,omitempty"`
	Seconds        float64             `json:"seconds"`
	Errors         []string            `json:"errors,omitempty"`
}

func TestPresenceLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("presence load test skipped in -short mode")
	}
	n := envInt(t, "PRESENCE_DEVICES", 100)
	reconnects := envInt(t, "PRESENCE_RECONNECTS", 10000)
	if n < 1 || n > presMaxDevs {
		t.Fatalf("PRESENCE_DEVICES=%d: want 1 to %d", n, presMaxDevs)
	}
	if reconnects < 0 || reconnects > 1_000_000 {
		t.Fatalf("PRESENCE_RECONNECTS=%d: want 0 to 1000000", reconnects)
	}
	budget := presBudget
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-deadlineMargin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	start := time.Now()
	rep := &PresenceReport{
		Start: start, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
		GraceMs: ms(presGrace), NodeTTLMs: ms(presNodeTTL), PingMs: ms(presPingInterval),
		PongWaitMs: ms(presPongWait), PresenceTTLMs: ms(presTTL), HubLogProblems: map[string]int{},
	}
	var nodes []*Hub
	ids := []string{"pl-a", "pl-b", "pl-c"}
	defer func() {
		noteLogs(t, ids, nodes, rep.HubLogProblems, &rep.HubLogSample)
		rep.Seconds = time.Since(start).Seconds()
		logPresenceReport(t, rep)
		writeReport(t, rep)
	}()
	fail, errorf := failures(t, &rep.Errors)

	// NATS, the record watcher, then the three nodes. Cleanups run in
	// reverse: devices close, nodes stop, NATS stops.
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns, nats.Name("presence-load"))
	recs, err := watchPresenceRecords(nc)
	if err != nil {
		fail("subscribe hub.presence.*: %v", err)
	}
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		fail("build: %v", err)
	}
	for _, id := range ids {
		h, err := StartHub(ctx, bin, "--nats-url", ns.ClientURL(), "--node-id", id,
			"--master-secret", string(hubtest.MasterSecret),
			"--pong-wait", presPongWait.String(), "--ping-interval", presPingInterval.String())
		if err != nil {
			fail("start %s: %v", id, err)
		}
		t.Cleanup(func() { _ = h.Stop() })
		nodes = append(nodes, h)
		rep.Nodes = append(rep.Nodes, fmt.Sprintf("%s pid %d %s", id, h.PID, h.WSURL))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	devs := &presenceDevices{}
	t.Cleanup(devs.closeAll)

	// 1. Connect: timeout devices first (their clock starts at auth), then
	// the closed and node_lost devices, and wait for every connected record.
	timeoutDevs, err := devs.dialGroup(ctx, b.WSURL, "pt-", n, true)
	if err != nil {
		fail("connect timeout devices to pl-b: %v", err)
	}
	closedDevs, err := devs.dialGroup(ctx, a.WSURL, "pc-", n, false)
	if err != nil {
		fail("connect closed devices to pl-a: %v", err)
	}
	lostDevs, err := devs.dialGroup(ctx, c.WSURL, "pn-", n, false)
	if err != nil {
		fail("connect node_lost devices to pl-c: %v", err)
	}
	if missing := recs.waitConnected(ctx, time.Now().Add(30*time.Second), timeoutDevs, closedDevs, lostDevs); len(missing) > 0 {
		fail("no connected record within 30 s for %d devices, e.g. %s", len(missing), strings.Join(missing[:min(5, len(missing))], ", "))
	}
	t.Logf("connected %d devices each to pl-a, pl-b (silent) and pl-c in %.1fs", n, time.Since(start).Seconds())

	// 2. closed: every device on A closes at once.
	closedAt := make([]time.Time, n)
	for i, d := range closedDevs {
		closedAt[i] = d.close()
	}
	recs.waitOffline(ctx, closedAt[n-1].Add(closedGoal+presWaitMore), closedDevs)
	closed := recs.measure("closed", "pl-a", fhub.ReasonClosed, closedDevs, closedAt, presGrace, "p99", closedGoal)
	rep.Causes = append(rep.Causes, closed)
	t.Logf("closed: %d of %d offline, p99 %.0f ms", closed.Offline, n, closed.P99Ms)

	// 3. node_lost: C dies. The survivors report its devices.
	killedAt := time.Now()
	c.Kill()
	recs.waitOffline(ctx, killedAt.Add(nodeLostGoal+presWaitMore), lostDevs)
	killAt := make([]time.Time, n)
	for i := range killAt {
		killAt[i] = killedAt
	}

	// 4. timeout: wait for B to give up on the silent devices.
	var lastAuth time.Time
	authAt := make([]time.Time, n)
	for i, d := range timeoutDevs {
		authAt[i] = d.authAt
		if d.authAt.After(lastAuth) {
			lastAuth = d.authAt
		}
	}
	recs.waitOffline(ctx, lastAuth.Add(timeoutGoal+presWaitMore), timeoutDevs)
	// Every offline record of the three causes is in (or late): give a
	// duplicate presDupWait to arrive before the records are judged; the
	// reconnect phase below gives them longer still.
	dupFrom := time.Now()
	t.Logf("node_lost and timeout records in after %.1fs", time.Since(start).Seconds())

	// 5. replaced and reconnects, on A and B only.
	rr := &PresenceReplaced{Devices: presReplaced, CloseCodes: map[int]int{}}
	rep.Replaced = rr
	firsts, err := devs.dialGroup(ctx, a.WSURL, "px-", presReplaced, false)
	if err != nil {
		fail("connect replaced devices to pl-a: %v", err)
	}
	churnDevs, err := devs.dialGroup(ctx, a.WSURL, "pr-", n, false)
	if err != nil {
		fail("connect reconnecting devices to pl-a: %v", err)
	}
	if missing := recs.waitConnected(ctx, time.Now().Add(30*time.Second), firsts, churnDevs); len(missing) > 0 {
		fail("no connected record within 30 s for %d devices, e.g. %s", len(missing), strings.Join(missing[:min(5, len(missing))], ", "))
	}
	for _, f := range firsts {
		s, err := devs.dial(ctx, b.WSURL, f.sn, false)
		if err != nil {
			fail("second session of %s on pl-b: %v", f.sn, err)
		}
		code := f.closeCode(presDialWait)
		rr.CloseCodes[code]++
		if code != 4001 {
			rr.Anomalies = append(rr.Anomalies, fmt.Sprintf("%s: first session on pl-a ended with %d, want 4001 (second session %s)", f.sn, code, s.sn))
		}
	}
	churn := runChurn(ctx, devs, churnDevs, []string{a.WSURL, b.WSURL}, reconnects)
	rep.Reconnects = churn
	lastChurn := time.Now()
	t.Logf("reconnects: %d in %.1fs (%.0f/s), max gap %.0f ms", churn.Done, churn.Seconds, churn.PerSecond, churn.GapMaxMs)
	// Past every grace the churn started, and presDupWait more.
	if err := sleepCtx(ctx, time.Until(lastChurn.Add(presGrace+presDupWait))); err != nil {
		errorf("waiting %v after the last reconnect: %v", presGrace+presDupWait, err)
	}
	if err := sleepCtx(ctx, time.Until(dupFrom.Add(presDupWait))); err != nil {
		errorf("waiting for duplicates: %v", err)
	}

	// Judge every record now that duplicates had their time.
	rep.Causes = []*PresenceCause{
		recs.measure("closed", "pl-a", fhub.ReasonClosed, closedDevs, closedAt, presGrace, "p99", closedGoal),
		recs.measure("timeout", "pl-b", schema.ReasonTimeout, timeoutDevs, authAt, presPongWait+presGrace, "p99", timeoutGoal),
		recs.measure("node_lost", "pl-c", fhub.ReasonNodeLost, lostDevs, killAt, presNodeTTL, "max", nodeLostGoal),
	}
	for _, f := range firsts {
		got := recs.of(f.sn)
		if len(got) != 1 {
			rr.ExtraRecords += max(0, len(got)-1)
			rr.Anomalies = append(rr.Anomalies, f.sn+": "+describe(got, f.authAt))
		}
	}
	recs.judgeChurn(churn, churnDevs)

	known := map[string]bool{}
	for _, g := range [][]*presenceDev{timeoutDevs, closedDevs, lostDevs, firsts, churnDevs} {
		for _, d := range g {
			known[d.sn] = true
		}
	}
	rep.Unexpected, rep.Undecodable = recs.unexpected(known)
	for _, cr := range rep.Causes {
		rep.Duplicates += cr.Duplicates
		if !cr.Correct {
			errorf("%s: %d missing, %d duplicate, %d wrong record(s) over %d devices; e.g. %s",
				cr.Cause, cr.Missing, cr.Duplicates, cr.WrongReason, cr.Devices, strings.Join(cr.Anomalies[:min(3, len(cr.Anomalies))], "; "))
		}
	}
	rep.Duplicates += rr.ExtraRecords + churn.FalseOffline + churn.ExtraConnected
	if len(rr.Anomalies) > 0 {
		errorf("replaced: %s", strings.Join(rr.Anomalies[:min(3, len(rr.Anomalies))], "; "))
	}
	if churn.FalseOffline > 0 || churn.ExtraConnected > 0 {
		errorf("reconnects: %d false offline and %d extra connected record(s) over %d reconnects; e.g. %s",
			churn.FalseOffline, churn.ExtraConnected, churn.Done, strings.Join(churn.Anomalies[:min(3, len(churn.Anomalies))], "; "))
	}
	if churn.Failed > 0 || churn.Done < churn.Requested {
		errorf("reconnects: %d of %d done, %d device(s) failed to reconnect", churn.Done, churn.Requested, churn.Failed)
	}
	if rep.Unexpected > 0 || rep.Undecodable > 0 {
		errorf("%d record(s) for unknown serials, %d undecodable", rep.Unexpected, rep.Undecodable)
	}
	for i, h := range nodes[:2] {
		if exited, werr := h.Exited(); exited {
			errorf("%s exited during the test: %v", ids[i], werr)
		}
	}
}

// presenceDev is one device session dialled by the test.
type presenceDev struct {
	sn     string
	conn   *websocket.Conn
	authAt time.Time // the auth request was written: the device's last sign of life when silent
	okAt   time.Time // the auth answer arrived
	done   chan struct{}
	endErr error // why the reader stopped; valid once done is closed
}

// close sends a normal close and closes the socket; it returns when the
// close began.
func (d *presenceDev) close() time.Time {
	at := time.Now()
	_ = d.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), at.Add(100*time.Millisecond))
	_ = d.conn.Close()
	return at
}

// closeCode waits at most d for the server to end the session and returns
// its close code: 0 without a close frame, -1 if still open.
func (d *presenceDev) closeCode(wait time.Duration) int {
	select {
	case <-d.done:
	case <-time.After(wait):
		return -1
	}
	var ce *websocket.CloseError
	if errors.As(d.endErr, &ce) {
		return ce.Code
	}
	return 0
}

// presenceDevices tracks every session dialled, so that cleanup closes
// each and waits for its reader.
type presenceDevices struct {
	mu      sync.Mutex
	all     []*presenceDev
	readers sync.WaitGroup
}

// dial connects and authenticates sn on wsURL. A silent device never
// answers pings; it keeps reading, so its TCP connection stays open.
func (p *presenceDevices) dial(ctx context.Context, wsURL, sn string, silent bool) (*presenceDev, error) {
	ctx, cancel := context.WithTimeout(ctx, presDialWait)
	defer cancel()
	dialer := websocket.Dialer{HandshakeTimeout: presDialWait, ReadBufferSize: 1024, WriteBufferSize: 1024}
	conn, resp, err := dialer.DialContext(ctx, wsURL, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	if silent {
		conn.SetPingHandler(func(string) error { return nil })
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	_ = conn.SetWriteDeadline(deadline)
	d := &presenceDev{sn: sn, conn: conn, done: make(chan struct{})}
	frame := hubtest.RequestFrame("/auth/device", "auth", hubtest.DeviceArgs(sn, DeviceType))
	d.authAt = time.Now()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("awaiting auth response: %w", err)
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			var m hubtest.Msg
			if json.Unmarshal(line, &m) != nil || m.Op != "response" || m.RequestID != "auth" {
				continue
			}
			if m.Code != 0 || !m.Result {
				_ = conn.Close()
				return nil, fmt.Errorf("/auth/device refused: code %d %q", m.Code, m.Msg)
			}
			d.okAt = time.Now()
			_ = conn.SetReadDeadline(time.Time{})
			_ = conn.SetWriteDeadline(time.Time{})
			p.mu.Lock()
			p.all = append(p.all, d)
			p.readers.Add(1)
			p.mu.Unlock()
			go func() {
				defer p.readers.Done()
				for {
					if _, _, err := conn.NextReader(); err != nil {
						d.endErr = err
						close(d.done)
						return
					}
				}
			}()
			return d, nil
		}
	}
}

// dialGroup connects prefix+"0" ... prefix+(n-1), presDialers at a time.
func (p *presenceDevices) dialGroup(ctx context.Context, wsURL, prefix string, n int, silent bool) ([]*presenceDev, error) {
	out := make([]*presenceDev, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(presDialers, n) {
		wg.Go(func() {
			for i := range next {
				out[i], errs[i] = p.dial(ctx, wsURL, fmt.Sprintf("%s%d", prefix, i), silent)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s%d: %w", prefix, i, err)
		}
	}
	return out, nil
}

// closeAll closes every session and waits (at most 10 s) for the readers.
func (p *presenceDevices) closeAll() {
	p.mu.Lock()
	all := p.all
	p.all = nil
	p.mu.Unlock()
	for _, d := range all {
		_ = d.conn.Close()
	}
	done := make(chan struct{})
	go func() {
		p.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
	}
}

// runChurn has each device close and at once reconnect, perDevice times
// (total spread over the devices), presChurners reconnects in flight at
// once. Reconnect j of a device goes to targets[((j+1)/2)%2]: a device
// that starts on targets[0] returns alternately to the same node and to
// the other one.
func runChurn(ctx context.Context, p *presenceDevices, devs []*presenceDev, targets []string, total int) *PresenceReconnects {
	r := &PresenceReconnects{Devices: len(devs), Requested: total}
	if total == 0 {
		return r
	}
	sem := make(chan struct{}, presChurners)
	var (
		mu        sync.Mutex
		gaps      []time.Duration
		same      atomic.Int64
		other     atomic.Int64
		failed    atomic.Int64
		anomalies []string
	)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, d := range devs {
		k := total / len(devs)
		if i < total%len(devs) {
			k++
		}
		wg.Go(func() {
			on := 0 // index in targets of the node d is on
			for j := range k {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				to := ((j + 1) / 2) % 2
				closedAt := d.close()
				var nd *presenceDev
				var err error
				for range presAttempts {
					if nd, err = p.dial(ctx, targets[to], d.sn, false); err == nil || ctx.Err() != nil {
						break
					}
				}
				<-sem
				if err != nil {
					failed.Add(1)
					mu.Lock()
					anomalies = append(anomalies, fmt.Sprintf("%s: reconnect %d failed after %d attempts: %v", d.sn, j, presAttempts, err))
					mu.Unlock()
					return
				}
				if to == on {
					same.Add(1)
				} else {
					other.Add(1)
				}
				mu.Lock()
				gaps = append(gaps, nd.okAt.Sub(closedAt))
				mu.Unlock()
				d, on = nd, to // d (per iteration) is the device's current session
			}
		})
	}
	wg.Wait()
	r.Seconds = time.Since(t0).Seconds()
	r.SameNode, r.OtherNode = int(same.Load()), int(other.Load())
	r.Done = r.SameNode + r.OtherNode
	r.Failed = int(failed.Load())
	if r.Seconds > 0 {
		r.PerSecond = float64(r.Done) / r.Seconds
	}
	p50, p99, mx := quantiles(gaps)
	r.GapP50Ms, r.GapP99Ms, r.GapMaxMs = ms(p50), ms(p99), ms(mx)
	for _, g := range gaps {
		if g >= presGrace {
			r.GapsOverGrace++
		}
	}
	r.Anomalies = anomalies
	return r
}

// presenceRecord is a record as received, with its arrival time.
type presenceRecord struct {
	fhub.PresenceRecord
	arrived time.Time
}

// presenceRecords collects what hub.presence.* carries.
type presenceRecords struct {
	mu  sync.Mutex
	by  map[string][]presenceRecord // Guarded by mu.
	bad int                         // undecodable. Guarded by mu.
}

func watchPresenceRecords(nc *nats.Conn) (*presenceRecords, error) {
	r := &presenceRecords{by: map[string][]presenceRecord{}}
	sub, err := nc.Subscribe("hub.presence.*", func(m *nats.Msg) {
		now := time.Now()
		var rec fhub.PresenceRecord
		err := json.Unmarshal(m.Data, &rec)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil || rec.SN == "" {
			r.bad++
			return
		}
		r.by[rec.SN] = append(r.by[rec.SN], presenceRecord{rec, now})
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	return r, nc.Flush()
}

func (r *presenceRecords) of(sn string) []presenceRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.by[sn])
}

// waitFor polls until every device's records satisfy ok, ctx ends or
// deadline passes, and returns the serials that do not.
func (r *presenceRecords) waitFor(ctx context.Context, deadline time.Time, ok func([]presenceRecord) bool, groups ...[]*presenceDev) []string {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var missing []string
		r.mu.Lock()
		for _, g := range groups {
			for _, d := range g {
				if !ok(r.by[d.sn]) {
					missing = append(missing, d.sn)
				}
			}
		}
		r.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		select {
		case <-ctx.Done():
			return missing
		case <-tick.C:
		}
	}
}

func (r *presenceRecords) waitConnected(ctx context.Context, deadline time.Time, groups ...[]*presenceDev) []string {
	return r.waitFor(ctx, deadline, func(l []presenceRecord) bool {
		return slices.ContainsFunc(l, func(x presenceRecord) bool { return x.Online })
	}, groups...)
}

func (r *presenceRecords) waitOffline(ctx context.Context, deadline time.Time, groups ...[]*presenceDev) []string {
	return r.waitFor(ctx, deadline, func(l []presenceRecord) bool {
		return slices.ContainsFunc(l, func(x presenceRecord) bool { return !x.Online })
	}, groups...)
}

// measure judges one cause: each device must have exactly a connected
// record, then one offline record of reason from node; latency is that
// record's arrival minus the device's event time.
func (r *presenceRecords) measure(cause, node string, reason fhub.Reason, devs []*presenceDev, events []time.Time,
	nominal time.Duration, stat string, goal time.Duration) *PresenceCause {
	c := &PresenceCause{Cause: cause, Node: node, Devices: len(devs), NominalMs: ms(nominal), GoalStat: stat, GoalMs: ms(goal)}
	var lat []time.Duration
	for i, d := range devs {
		got := r.of(d.sn)
		bad := false
		off := slices.IndexFunc(got, func(x presenceRecord) bool { return !x.Online })
		switch {
		case off < 0:
			c.Missing++
			bad = true
		case got[off].Reason != reason || got[off].Node != node:
			c.WrongReason++
			bad = true
		default:
			c.Offline++
			lat = append(lat, got[off].arrived.Sub(events[i]))
		}
		if len(got) > 2 {
			c.Duplicates += len(got) - 2
			bad = true
		}
		if len(got) == 0 || !got[0].Online || got[0].Reason != fhub.ReasonConnected {
			bad = true
		}
		if bad && len(c.Anomalies) < presSample {
			c.Anomalies = append(c.Anomalies, d.sn+": "+describe(got, events[i]))
		}
	}
	p50, p99, mx := quantiles(lat)
	c.P50Ms, c.P99Ms, c.MaxMs = ms(p50), ms(p99), ms(mx)
	c.ExcessP50Ms, c.ExcessP99Ms = c.P50Ms-c.NominalMs, c.P99Ms-c.NominalMs
	c.Correct = c.Missing == 0 && c.Duplicates == 0 && c.WrongReason == 0 && len(c.Anomalies) == 0
	figure := c.P99Ms
	if stat == "max" {
		figure = c.MaxMs
	}
	c.GoalMet = len(lat) > 0 && figure <= c.GoalMs
	return c
}

// judgeChurn counts the records the reconnecting devices got beyond their
// first connected one.
func (r *presenceRecords) judgeChurn(c *PresenceReconnects, devs []*presenceDev) {
	for _, d := range devs {
		got := r.of(d.sn)
		bad := len(got) == 0 || !got[0].Online
		for i, x := range got {
			switch {
			case !x.Online:
				c.FalseOffline++
				bad = true
			case i > 0:
				c.ExtraConnected++
				bad = true
			}
		}
		if bad && len(c.Anomalies) < presSample {
			var since time.Time
			if len(got) > 0 {
				since = got[0].arrived
			}
			c.Anomalies = append(c.Anomalies, d.sn+": "+describe(got, since))
		}
	}
}

// unexpected counts records for serials outside known, and undecodable ones.
func (r *presenceRecords) unexpected(known map[string]bool) (n, bad int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for sn, l := range r.by {
		if !known[sn] {
			n += len(l)
		}
	}
	return n, r.bad
}

// describe lists records as [+arrival-since reason node online at] for a
// report.
func describe(l []presenceRecord, since time.Time) string {
	if len(l) == 0 {
		return "no records"
	}
	var b strings.Builder
	for i, x := range l {
		if i > 0 {
			b.WriteByte(' ')
		}
		state := "off"
		if x.Online {
			state = "on"
		}
		fmt.Fprintf(&b, "[%+.3fs %s %s %s at=%s]", x.arrived.Sub(since).Seconds(), state, x.Reason, x.Node,
			time.UnixMilli(x.At).Format("15:04:05.000"))
	}
	return b.String()
}

// quantiles returns the nearest-rank p50 and p99 and the maximum.
func quantiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(q float64) time.Duration { return s[max(0, int(math.Ceil(q*float64(len(s))))-1)] }
	return rank(0.5), rank(0.99), s[len(s)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sleepCtx sleeps d (nothing if d <= 0) unless ctx ends first, and
// returns ctx's error if it has.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logPresenceReport prints the report as one table.
func logPresenceReport(t *testing.T, r *PresenceReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfleethub presence: %s, %d CPUs, %.1fs; 3 node processes on one NATS server; grace %v, node TTL %v, ping %v, pong wait %v, presence TTL %v\n",
		r.GoVersion, r.NumCPU, r.Seconds, presGrace, presNodeTTL, presPingInterval, presPongWait, presTTL)
	for _, n := range r.Nodes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	fmt.Fprintf(&b, "%-10s %-5s %7s %7s %7s %5s %5s %9s %9s %9s %9s %9s %9s %-12s %-5s %s\n",
		"cause", "node", "devices", "offline", "missing", "dup", "wrong", "p50 ms", "p99 ms", "max ms", "nominal", "p50-nom", "p99-nom", "goal", "goal", "records")
	for _, c := range r.Causes {
		fmt.Fprintf(&b, "%-10s %-5s %7d %7d %7d %5d %5d %9.1f %9.1f %9.1f %9.0f %+9.1f %+9.1f %-12s %-5s %s\n",
			c.Cause, c.Node, c.Devices, c.Offline, c.Missing, c.Duplicates, c.WrongReason, c.P50Ms, c.P99Ms, c.MaxMs,
			c.NominalMs, c.ExcessP50Ms, c.ExcessP99Ms, fmt.Sprintf("%s<=%.0f", c.GoalStat, c.GoalMs), passFail(c.GoalMet), okFail(c.Correct))
	}
	b.WriteString("(latency: closed = record arrival - socket close; timeout = arrival - auth request, the silent device's last sign of life;\n" +
		" node_lost = arrival - SIGKILL of pl-c, nominal = node TTL; nom = nominal: grace, pong wait + grace, node TTL)\n")
	if rr := r.Replaced; rr != nil {
		fmt.Fprintf(&b, "replaced   pl-a->pl-b: %d devices, first sessions closed with %v, records after connected %d: %s\n",
			rr.Devices, rr.CloseCodes, rr.ExtraRecords, okFail(rr.ExtraRecords == 0 && len(rr.Anomalies) == 0))
	}
	if c := r.Reconnects; c != nil {
		fmt.Fprintf(&b, "reconnects pl-a/pl-b: %d of %d over %d devices in %.1fs (%.0f/s), same node %d, other node %d; gap close->auth p50 %.1f p99 %.1f max %.1f ms, %d over grace, %d devices failed\n",
			c.Done, c.Requested, c.Devices, c.Seconds, c.PerSecond, c.SameNode, c.OtherNode, c.GapP50Ms, c.GapP99Ms, c.GapMaxMs, c.GapsOverGrace, c.Failed)
		fmt.Fprintf(&b, "false offlines %d over %d reconnects, extra connected records %d: %s\n",
			c.FalseOffline, c.Done, c.ExtraConnected, okFail(c.FalseOffline == 0 && c.ExtraConnected == 0))
	}
	fmt.Fprintf(&b, "duplicate records %d; records for unknown serials %d, undecodable %d; hub WARN/ERROR lines %v\n",
		r.Duplicates, r.Unexpected, r.Undecodable, r.HubLogProblems)
	for _, l := range r.HubLogSample {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, c := range r.Causes {
		for _, a := range c.Anomalies {
			fmt.Fprintf(&b, "%s anomaly: %s\n", c.Cause, a)
		}
	}
	if r.Replaced != nil {
		for _, a := range r.Replaced.Anomalies {
			fmt.Fprintf(&b, "replaced anomaly: %s\n", a)
		}
	}
	if r.Reconnects != nil {
		for _, a := range r.Reconnects.Anomalies {
			fmt.Fprintf(&b, "reconnect anomaly: %s\n", a)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "ERROR: %s\n", e)
	}
	t.Log(b.String())
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func okFail(ok bool) string {
	if ok {
		return "ok"
	}
	return "WRONG"
}
