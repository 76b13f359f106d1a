//go:build load

// TestDataPlaneLoad measures the status data plane across two node
// processes on one NATS server: devices on one node report their status,
// an admin on the other node receives the coalesced /push/status. Run it
// with -count=1:
//
//	DP_DEVICES=1000 DP_SECONDS=20 LOAD_REPORT=/tmp/dataplane.json \
//	  go test -count=1 -tags load -run TestDataPlaneLoad -v -timeout 10m ./internal/loadtest
//
// Nodes dp-a (A) and dp-b (B) join an in-process nats-server (natstest).
// DP_DEVICES devices connect to B; one admin logs in on A (admin/admin,
// which --dev sets when --admin-password is empty, --master-secret given or
// not) and subscribes with {"all":true,"topics":["status"]}. Then:
//   - baseline: for DP_SECONDS seconds every device sends /device/status
//     once a second, device i at offset i/D s, the body {"t":<unix nanos at
//     send>,"seq":n}; the admin measures latency = receipt - t for every
//     /push/status;
//   - chatty: the same, plus one more device on B sending 1,000 reports/s,
//     paced by a 1 ms ticker. The hub answers 429 past its storm limit (10/s,
//     burst 20); when it closes the session, the device reconnects after
//     DP_CHATTY_BACKOFF_MS (default 1000; negative: it stays away), as a
//     device in the field would, and the reports due meanwhile are dropped.
//
// After each phase the test waits the coalescing window plus 1 s, then
// compares, per device, the last seq the hub acknowledged with the last seq
// the admin saw. A 429, an error or a disconnect of a normal device, or a
// normal device whose last acknowledged status the admin never got, fails
// the test. The chatty device's fate (429s, closes, pushes) is reported,
// not judged. CPU of A and B comes from /proc over each phase's sending
// span; "test" is this process, which holds the NATS server and every
// client.

package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
)

// Parameters and bounds of the run.
const (
	dpDefaultDevices = 1000
	dpMaxDevices     = 5000 // one file each in this process, of 20,000
	dpDefaultSeconds = 20
	dpMaxSeconds     = 60
	dpChattyRate     = 1000                               // the chatty device's reports per second
	dpCoalesceWindow = 250 * time.Millisecond             // cmd/hub's default, passed explicitly
	dpDrain          = dpCoalesceWindow + time.Second     // after a phase, before judging it
	dpDefaultBackoff = 1000                               // ms before the chatty device reconnects
	dpDialers        = 16                                 // concurrent dials
	dpDialWait       = 10 * time.Second                   // one dial plus its auth or login
	dpWriteWait      = 5 * time.Second                    // one frame written
	dpSettle         = 2 * time.Second                    // after connecting, before the baseline
	dpBudget         = 3 * time.Minute                    // the whole test, build included
	dpSample         = 10                                 // anomalies kept per kind
	dpReadBuf        = 4096                               // client socket buffers
	dpReservoir      = 200_000                            // latency samples kept per phase
	dpChattyTick     = time.Millisecond                   // the chatty device's pacing ticker
	dpStartAhead     = 200 * time.Millisecond             // a phase starts this far after it is set up
	dpStatusService  = "/device/status"                   //
	dpPushService    = "/push/status"                     //
	dpAdminUser      = "admin"                            // --dev's bootstrap admin
	dpAdminPassword  = "admin"                            //
	dpSubscribeArgs  = `{"all":true,"topics":["status"]}` //
)

// DPChattySession is one session of the chatty device.
type DPChattySession struct {
	OpenedMs   float64 `json:"opened_ms"` // since the phase start; negative: before it
	LifetimeMs float64 `json:"lifetime_ms"`
	Acked      int64   `json:"acked"`
	Limited    int64   `json:"limited_429"`
	Close      string  `json:"close"` // how it ended: "1008 too many bad requests", "open", ...
}

// DPChatty is what the chatty device did in a phase.
type DPChatty struct {
	SN          string            `json:"sn"`
	Rate        int               `json:"rate_per_second"`
	Offered     int64             `json:"offered"`               // reports due by the pacing
	Sent        int64             `json:"sent"`                  // frames written
	Dropped     int64             `json:"dropped_while_offline"` // due while it had no session
	WriteErrors int64             `json:"write_errors"`
	Acked       int64             `json:"acked"`
	Limited     int64             `json:"limited_429"`
	Errors      int64             `json:"errors"` // other codes
	Sessions    int               `json:"sessions"`
	DialErrors  int               `json:"dial_errors"`
	Closes      map[string]int    `json:"closes"`
	SessionLog  []DPChattySession `json:"session_log"`
	Pushes      int64             `json:"admin_pushes"`
	PushesPerS  float64           `json:"admin_pushes_per_second"`
	P50Ms       float64           `json:"latency_p50_ms"`
	P99Ms       float64           `json:"latency_p99_ms"`
	MaxMs       float64           `json:"latency_max_ms"`
	LastAcked   int64             `json:"last_acked_seq"`
	LastSeen    int64             `json:"last_seen_seq"`
	LastArrived bool              `json:"last_status_delivered"`
}

// DPPhase is what one phase measured. Counts are of the normal devices.
type DPPhase struct {
	Phase           string                        `json:"phase"`
	Devices         int                           `json:"devices"`
	Seconds         float64                       `json:"seconds"` // the sending span
	Sent            int64                         `json:"sent"`
	Acked           int64                         `json:"acked"`
	Limited         int64                         `json:"limited_429"`
	Errors          int64                         `json:"errors"` // other codes, undecodable answers
	WriteErrors     int64                         `json:"write_errors"`
	Unanswered      int64                         `json:"unanswered"`
	AckedPerSec     float64                       `json:"acked_per_second"`
	AckP50Ms        float64                       `json:"ack_p50_ms"` // request written to response read
	AckP99Ms        float64                       `json:"ack_p99_ms"`
	Pushes          int64                         `json:"admin_pushes"`
	PushesPerSec    float64                       `json:"admin_pushes_per_second"`
	StalePushes     int64                         `json:"stale_pushes"` // seq not newer than one seen before
	LatencyCount    int64                         `json:"latency_count"`
	P50Ms           float64                       `json:"latency_p50_ms"`
	P99Ms           float64                       `json:"latency_p99_ms"`
	MaxMs           float64                       `json:"latency_max_ms"`
	Behind          int                           `json:"devices_last_status_missing"`
	BehindSample    []string                      `json:"missing_sample,omitempty"`
	Disconnected    int                           `json:"devices_disconnected"`
	Chatty          *DPChatty                     `json:"chatty,omitempty"`
	CPUASeconds     float64                       `json:"cpu_a_seconds"`
	CPUBSeconds     float64                       `json:"cpu_b_seconds"`
	CPUTestSeconds  float64                       `json:"cpu_test_seconds"` // NATS server and clients
	CPUOtherSeconds float64                       `json:"cpu_other_seconds"`
	CPUAPercent     float64                       `json:"cpu_a_percent"` // of one core
	CPUBPercent     float64                       `json:"cpu_b_percent"`
	CPUTestPercent  float64                       `json:"cpu_test_percent"`
	CPUOtherPercent float64                       `json:"cpu_other_percent"`
	HubDelta        map[string]map[string]float64 `json:"hub_metric_deltas"`
}

// DPReport is the whole run's outcome, written as JSON to LOAD_REPORT.
type DPReport struct {
	Start            time.Time                     `json:"start"`
	GoVersion        string                        `json:"go_version"`
	NumCPU           int                           `json:"num_cpu"`
	Devices          int                           `json:"devices"`
	PhaseSeconds     int                           `json:"phase_seconds"`
	ChattyRate       int                           `json:"chatty_rate_per_second"`
	ChattyBackoffMs  int                           `json:"chatty_backoff_ms"`
	CoalesceWindowMs float64                       `json:"coalesce_window_ms"`
	Nodes            []string                      `json:"nodes"`
	ConnectSeconds   float64                       `json:"connect_seconds"`
	Phases           []*DPPhase                    `json:"phases"`
	HubMetrics       map[string]map[string]float64 `json:"hub_metrics_end"`
	HubLogProblems   map[string]int                `json:"hub_log_warn_error_lines"`
	HubLogSample     []string                      `json:"hub_log_sample,omitempty"`
	ErrorSample      []string                      `json:"client_error_sample,omitempty"`
	Seconds          float64                       `json:"seconds"`
	Errors           []string                      `json:"errors,omitempty"`
}

// dpMetricNames are the hub metrics reported per phase (summed over labels).
var dpMetricNames = []string{
	"fleethub_storm_limited_total", "fleethub_status_coalesced_total", "fleethub_pushes_delivered_total",
	"fleethub_pushes_dropped_total", "fleethub_slow_consumers_total", "fleethub_abuse_closes_total",
	"fleethub_record_store_failures_total",
}

func TestDataPlaneLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("data-plane load test skipped in -short mode")
	}
	n := envInt(t, "DP_DEVICES", dpDefaultDevices)
	secs := envInt(t, "DP_SECONDS", dpDefaultSeconds)
	backoffMs := envInt(t, "DP_CHATTY_BACKOFF_MS", dpDefaultBackoff)
	if n < 1 || n > dpMaxDevices {
		t.Fatalf("DP_DEVICES=%d: want 1 to %d", n, dpMaxDevices)
	}
	if secs < 1 || secs > dpMaxSeconds {
		t.Fatalf("DP_SECONDS=%d: want 1 to %d", secs, dpMaxSeconds)
	}
	if backoffMs > 60_000 {
		t.Fatalf("DP_CHATTY_BACKOFF_MS=%d: want at most 60000 (negative: no reconnect)", backoffMs)
	}
	budget := dpBudget
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-30*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	start := time.Now()
	rep := &DPReport{
		Start: start, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), Devices: n, PhaseSeconds: secs,
		ChattyRate: dpChattyRate, ChattyBackoffMs: backoffMs, CoalesceWindowMs: ms(dpCoalesceWindow),
		HubMetrics: map[string]map[string]float64{}, HubLogProblems: map[string]int{},
	}
	r := &dpRun{n: n, secs: secs, backoff: time.Duration(backoffMs) * time.Millisecond}
	ids := []string{"dp-a", "dp-b"}
	defer func() {
		mctx, mcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer mcancel()
		for i, h := range r.nodes {
			if m, err := h.Metrics(mctx); err == nil {
				rep.HubMetrics[ids[i]] = dpPick(m)
			}
		}
		noteLogs(t, ids, r.nodes, rep.HubLogProblems, &rep.HubLogSample)
		rep.ErrorSample = r.errs.list()
		rep.Seconds = time.Since(start).Seconds()
		dpLogReport(t, rep)
		writeReport(t, rep)
	}()
	fail, errorf := failures(t, &rep.Errors)

	// NATS, then the two nodes, then the clients: cleanups run in reverse.
	ns := natstest.Run(t)
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		fail("build: %v", err)
	}
	for _, id := range ids {
		h, err := StartHub(ctx, bin, "--nats-url", ns.ClientURL(), "--node-id", id,
			"--master-secret", string(hubtest.MasterSecret), "--coalesce-window", dpCoalesceWindow.String())
		if err != nil {
			fail("start %s: %v", id, err)
		}
		t.Cleanup(func() { _ = h.Stop() })
		r.nodes = append(r.nodes, h)
		rep.Nodes = append(rep.Nodes, fmt.Sprintf("%s pid %d %s", id, h.PID, h.WSURL))
	}
	r.a, r.b = r.nodes[0], r.nodes[1]
	t.Cleanup(r.closeAll)

	// The admin first, so that its subscription answer is small.
	r.admin, err = r.dialAdmin(ctx, r.a.WSURL)
	if err != nil {
		fail("admin on dp-a: %v", err)
	}
	connectAt := time.Now()
	if err := r.dialDevices(ctx); err != nil {
		fail("connect %d devices to dp-b: %v", n, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = r.b.WaitSessions(wctx, n)
	wcancel()
	if err != nil {
		fail("dp-b: %v", err)
	}
	rep.ConnectSeconds = time.Since(connectAt).Seconds()
	t.Logf("connected %d devices to dp-b in %.1fs; admin on dp-a subscribed", n, rep.ConnectSeconds)
	if err := sleepCtx(ctx, dpSettle); err != nil {
		fail("settling: %v", err)
	}

	// Phase 1: the baseline.
	base, err := r.runPhase(ctx, "baseline", false)
	if base != nil {
		rep.Phases = append(rep.Phases, base)
	}
	if err != nil {
		fail("baseline: %v", err)
	}
	t.Logf("baseline: %.0f acked/s, latency p50 %.1f p99 %.1f max %.1f ms", base.AckedPerSec, base.P50Ms, base.P99Ms, base.MaxMs)

	// Phase 2: the chatty device joins B, then the same again.
	r.chatty = &dpDev{sn: "dpc-0", idx: n}
	if _, err := r.dial(ctx, r.b.WSURL, r.chatty); err != nil {
		fail("connect the chatty device to dp-b: %v", err)
	}
	chatty, err := r.runPhase(ctx, "chatty", true)
	if chatty != nil {
		rep.Phases = append(rep.Phases, chatty)
	}
	if err != nil {
		fail("chatty: %v", err)
	}
	t.Logf("chatty: %.0f acked/s, latency p50 %.1f p99 %.1f max %.1f ms; chatty device %d acked, %d 429, %d sessions",
		chatty.AckedPerSec, chatty.P50Ms, chatty.P99Ms, chatty.MaxMs, chatty.Chatty.Acked, chatty.Chatty.Limited, chatty.Chatty.Sessions)

	// Judge.
	for _, p := range rep.Phases {
		if p.Limited > 0 {
			errorf("%s: normal devices got %d 429s", p.Phase, p.Limited)
		}
		if p.Errors > 0 || p.WriteErrors > 0 || p.Unanswered > 0 || p.Disconnected > 0 {
			errorf("%s: normal devices: %d error answers, %d write errors, %d unanswered after %v, %d disconnected",
				p.Phase, p.Errors, p.WriteErrors, p.Unanswered, dpDrain, p.Disconnected)
		}
		if p.Behind > 0 {
			errorf("%s: the admin missed the last acknowledged status of %d of %d devices %v after the phase; e.g. %s",
				p.Phase, p.Behind, p.Devices, dpDrain, strings.Join(p.BehindSample, "; "))
		}
	}
	if done, err := r.admin.ended(); done {
		errorf("the admin's session ended: %v", err)
	}
	for i, h := range r.nodes {
		if exited, werr := h.Exited(); exited {
			errorf("%s exited during the test: %v", ids[i], werr)
		}
	}
}

// dpRun is the state of one run.
type dpRun struct {
	n       int
	secs    int
	backoff time.Duration
	nodes   []*Hub
	a, b    *Hub
	devs    []*dpDev
	chatty  *dpDev
	admin   *dpAdmin
	errs    dpErrors

	mu       sync.Mutex
	sessions []*dpSession // every device session dialled, for cleanup
	readers  sync.WaitGroup
}

// dpDev is one device: counters across its sessions.
type dpDev struct {
	sn  string
	idx int // in the admin's tables: 0..n-1 normal devices, n the chatty one

	cur *dpSession // the current session; changed only by the device's sender
	seq int64      // the last seq sent; the sender's own

	sendSeq, sendAt atomic.Int64 // the last request written and when (unix nanos)

	sent, writeErrs, acked, limited, errs atomic.Int64
	lastAcked                             atomic.Int64
}

// dpSession is one WebSocket session of a device.
type dpSession struct {
	dev     *dpDev
	conn    *websocket.Conn
	opened  time.Time
	done    chan struct{}
	endErr  error     // valid once done is closed
	endedAt time.Time // valid once done is closed
	closing atomic.Bool

	acked, limited atomic.Int64
}

func (s *dpSession) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// closeDesc says how a session ended: its close code and reason, or the
// error.
func (s *dpSession) closeDesc() string {
	if !s.isDone() {
		return "open"
	}
	var ce *websocket.CloseError
	if errors.As(s.endErr, &ce) {
		return strings.TrimSpace(fmt.Sprintf("%d %s", ce.Code, ce.Text))
	}
	return "no close frame: " + s.endErr.Error()
}

// dpPhase holds one phase's samples while it runs.
type dpPhase struct {
	lat, chattyLat, ack  *Reservoir
	latMax, chattyLatMax atomic.Int64
}

func newDPPhase() *dpPhase {
	return &dpPhase{
		lat:       NewReservoir(dpReservoir, 16),
		chattyLat: NewReservoir(dpReservoir/4, 4),
		ack:       NewReservoir(dpReservoir, 16),
	}
}

// dpErrors keeps a sample of client-side anomalies.
type dpErrors struct {
	mu     sync.Mutex
	total  int
	sample []string
}

func (e *dpErrors) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.total++
	if len(e.sample) < 3*dpSample {
		e.sample = append(e.sample, fmt.Sprintf(format, args...))
	}
}

func (e *dpErrors) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := slices.Clone(e.sample)
	if e.total > len(out) {
		out = append(out, fmt.Sprintf("... %d in all", e.total))
	}
	return out
}

// dpAnswer is a server message as a device reads it.
type dpAnswer struct {
	Op        string `json:"op"`
	RequestID string `json:"request_id"`
	Code      int    `json:"code"`
	Msg       string `json:"msg"`
	Result    bool   `json:"result"`
}

// dial connects and authenticates d on wsURL and starts its reader; the
// session becomes d's current one.
func (r *dpRun) dial(ctx context.Context, wsURL string, d *dpDev) (*dpSession, error) {
	ctx, cancel := context.WithTimeout(ctx, dpDialWait)
	defer cancel()
	conn, err := dpHandshake(ctx, wsURL, "/auth/device", hubtest.DeviceArgs(d.sn, DeviceType))
	if err != nil {
		return nil, err
	}
	s := &dpSession{dev: d, conn: conn, opened: time.Now(), done: make(chan struct{})}
	r.mu.Lock()
	r.sessions = append(r.sessions, s)
	r.readers.Add(1)
	r.mu.Unlock()
	d.cur = s
	go r.readDevice(s)
	return s, nil
}

// dpHandshake dials wsURL and sends one auth request (request_id "auth"),
// returning the connection once it is answered with success.
func dpHandshake(ctx context.Context, wsURL, service string, args any) (*websocket.Conn, error) {
	dialer := websocket.Dialer{HandshakeTimeout: dpDialWait, ReadBufferSize: dpReadBuf, WriteBufferSize: dpReadBuf}
	conn, resp, err := dialer.DialContext(ctx, wsURL, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	_ = conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(hubtest.RequestFrame(service, "auth", args))); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := dpAwait(conn, "auth"); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w", service, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// dpAwait reads until the response with request_id id, and returns an
// error unless it is a success. Other messages are skipped.
func dpAwait(conn *websocket.Conn, id string) error {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("awaiting response %q: %w", id, err)
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			var m dpAnswer
			if json.Unmarshal(line, &m) != nil || m.Op != "response" || m.RequestID != id {
				continue
			}
			if m.Code != 0 || !m.Result {
				return fmt.Errorf("refused: code %d %q", m.Code, m.Msg)
			}
			return nil
		}
	}
}

// readDevice reads a device session's answers until it ends: request_id
// is the report's seq.
func (r *dpRun) readDevice(s *dpSession) {
	defer r.readers.Done()
	d := s.dev
	for {
		_, data, err := s.conn.ReadMessage()
		if err != nil {
			s.endErr, s.endedAt = err, time.Now()
			close(s.done)
			if !s.closing.Load() && d.idx < r.n {
				r.errs.add("%s: session ended: %v", d.sn, err)
			}
			return
		}
		now := time.Now()
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var m dpAnswer
			if err := json.Unmarshal(line, &m); err != nil {
				d.errs.Add(1)
				r.errs.add("%s: undecodable message %.200q", d.sn, line)
				continue
			}
			if m.Op != "response" {
				continue // a device gets nothing else here; pushes would be harmless
			}
			seq, perr := strconv.ParseInt(m.RequestID, 10, 64)
			switch {
			case perr != nil:
				d.errs.Add(1)
				r.errs.add("%s: answer to an unknown request: %.200q", d.sn, line)
			case m.Code == 0:
				d.acked.Add(1)
				s.acked.Add(1)
				dpStoreMax(&d.lastAcked, seq)
				if seq == d.sendSeq.Load() && d.idx < r.n {
					if p := r.admin.phase.Load(); p != nil {
						p.ack.Add(d.idx, now.Sub(time.Unix(0, d.sendAt.Load())))
					}
				}
			case m.Code == 429:
				d.limited.Add(1)
				s.limited.Add(1)
				if d.idx < r.n {
					r.errs.add("%s: seq %d: 429 %q", d.sn, seq, m.Msg)
				}
			default:
				d.errs.Add(1)
				r.errs.add("%s: seq %d: code %d %q", d.sn, seq, m.Code, m.Msg)
			}
		}
	}
}

// send writes d's next report on s and reports whether it went out.
func (d *dpDev) send(s *dpSession) bool {
	d.seq++
	t := time.Now().UnixNano()
	b := make([]byte, 0, 160)
	b = append(b, `{"op":"request","service":"`+dpStatusService+`","request_id":"`...)
	b = strconv.AppendInt(b, d.seq, 10)
	b = append(b, `","args":{"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, d.seq, 10)
	b = append(b, `}}`...)
	d.sendSeq.Store(d.seq)
	d.sendAt.Store(t)
	_ = s.conn.SetWriteDeadline(time.Now().Add(dpWriteWait))
	if err := s.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		d.writeErrs.Add(1)
		return false
	}
	d.sent.Add(1)
	return true
}

// dialDevices connects the normal devices dp-0 ... dp-(n-1) to B,
// dpDialers at a time.
func (r *dpRun) dialDevices(ctx context.Context) error {
	r.devs = make([]*dpDev, r.n)
	errs := make([]error, r.n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(dpDialers, r.n) {
		wg.Go(func() {
			for i := range next {
				d := &dpDev{sn: "dp-" + strconv.Itoa(i), idx: i}
				r.devs[i] = d
				_, errs[i] = r.dial(ctx, r.b.WSURL, d)
			}
		})
	}
	for i := range r.n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("dp-%d: %w", i, err)
		}
	}
	return nil
}

// closeAll closes every session and the admin, and waits (at most 10 s)
// for the readers.
func (r *dpRun) closeAll() {
	r.mu.Lock()
	all := r.sessions
	r.sessions = nil
	r.mu.Unlock()
	for _, s := range all {
		s.closing.Store(true)
		_ = s.conn.Close()
	}
	if r.admin != nil {
		r.admin.closing.Store(true)
		_ = r.admin.conn.Close()
	}
	done := make(chan struct{})
	go func() {
		r.readers.Wait()
		if r.admin != nil {
			<-r.admin.done
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
	}
}

// dpAdmin is the admin session on A and what it has seen.
type dpAdmin struct {
	conn    *websocket.Conn
	done    chan struct{}
	endErr  error // valid once done is closed
	closing atomic.Bool

	index    map[string]int // serial to index; read-only once reading starts
	lastSeen []atomic.Int64 // per index: the highest seq pushed
	pushes   []atomic.Int64 // per index
	stale    []atomic.Int64 // per index: pushes whose seq was not newer
	unknown  atomic.Int64   // pushes about serials the test does not know
	bad      atomic.Int64   // undecodable messages
	phase    atomic.Pointer[dpPhase]
}

func (a *dpAdmin) ended() (bool, error) {
	select {
	case <-a.done:
		return true, a.endErr
	default:
		return false, nil
	}
}

// dialAdmin logs in as admin on wsURL, subscribes to every device's status
// and starts the reader.
func (r *dpRun) dialAdmin(ctx context.Context, wsURL string) (*dpAdmin, error) {
	ctx, cancel := context.WithTimeout(ctx, dpDialWait)
	defer cancel()
	conn, err := dpHandshake(ctx, wsURL, "/auth/login", map[string]any{"username": dpAdminUser, "password": dpAdminPassword})
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	_ = conn.SetWriteDeadline(deadline)
	frame := hubtest.RequestFrame("/admin/subscribe", "sub", json.RawMessage(dpSubscribeArgs))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := dpAwait(conn, "sub"); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("/admin/subscribe: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	_ = conn.SetWriteDeadline(time.Time{})
	a := &dpAdmin{
		conn: conn, done: make(chan struct{}), index: make(map[string]int, r.n+1),
		lastSeen: make([]atomic.Int64, r.n+1), pushes: make([]atomic.Int64, r.n+1), stale: make([]atomic.Int64, r.n+1),
	}
	for i := range r.n {
		a.index["dp-"+strconv.Itoa(i)] = i
	}
	a.index["dpc-0"] = r.n
	go r.readAdmin(a)
	return a, nil
}

// dpPush is a /push/status as the admin reads it.
type dpPush struct {
	Op      string `json:"op"`
	Service string `json:"service"`
	Values  struct {
		SN     string `json:"sn"`
		Status struct {
			T   int64 `json:"t"`
			Seq int64 `json:"seq"`
		} `json:"status"`
	} `json:"values"`
}

// readAdmin reads the admin's pushes until the session ends.
func (r *dpRun) readAdmin(a *dpAdmin) {
	defer close(a.done)
	for {
		_, data, err := a.conn.ReadMessage()
		if err != nil {
			a.endErr = err
			if !a.closing.Load() {
				r.errs.add("admin: session ended: %v", err)
			}
			return
		}
		now := time.Now()
		p := a.phase.Load()
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var m dpPush
			if err := json.Unmarshal(line, &m); err != nil {
				a.bad.Add(1)
				r.errs.add("admin: undecodable message %.200q", line)
				continue
			}
			if m.Op != "push" || m.Service != dpPushService {
				continue
			}
			i, ok := a.index[m.Values.SN]
			if !ok {
				a.unknown.Add(1)
				continue
			}
			a.pushes[i].Add(1)
			if m.Values.Status.Seq <= a.lastSeen[i].Load() {
				a.stale[i].Add(1)
			} else {
				a.lastSeen[i].Store(m.Values.Status.Seq)
			}
			if p == nil || m.Values.Status.T == 0 {
				continue
			}
			lat := now.Sub(time.Unix(0, m.Values.Status.T))
			if i < r.n {
				p.lat.Add(i, lat)
				dpStoreMax(&p.latMax, int64(lat))
			} else {
				p.chattyLat.Add(0, lat)
				dpStoreMax(&p.chattyLatMax, int64(lat))
			}
		}
	}
}

// dpTotals are counters summed over the normal devices.
type dpTotals struct {
	sent, writeErrs, acked, limited, errs, pushes, stale int64
}

func (r *dpRun) totals() dpTotals {
	var s dpTotals
	for i, d := range r.devs {
		s.sent += d.sent.Load()
		s.writeErrs += d.writeErrs.Load()
		s.acked += d.acked.Load()
		s.limited += d.limited.Load()
		s.errs += d.errs.Load()
		s.pushes += r.admin.pushes[i].Load()
		s.stale += r.admin.stale[i].Load()
	}
	return s
}

// dpCPU is a CPU reading of A, B, this process and the machine.
type dpCPU struct{ a, b, test, sys time.Duration }

func (r *dpRun) cpu() (dpCPU, error) {
	var c dpCPU
	var err error
	if c.a, err = CPUTime(r.a.PID); err != nil {
		return c, err
	}
	if c.b, err = CPUTime(r.b.PID); err != nil {
		return c, err
	}
	if c.test, err = CPUTime(os.Getpid()); err != nil {
		return c, err
	}
	c.sys, err = SystemBusy()
	return c, err
}

// metrics reads the selected metrics of both nodes (nil on an error).
func (r *dpRun) metrics(ctx context.Context) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for i, h := range []*Hub{r.a, r.b} {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := h.Metrics(mctx)
		cancel()
		if err != nil {
			return nil
		}
		out[[]string{"dp-a", "dp-b"}[i]] = dpPick(m)
	}
	return out
}

// runPhase runs one phase: every normal device reports once a second for
// r.secs seconds (device i at offset i/n s), with the chatty device if
// chatty; then it waits dpDrain and measures.
func (r *dpRun) runPhase(ctx context.Context, name string, chatty bool) (*DPPhase, error) {
	res := &DPPhase{Phase: name, Devices: r.n}
	p := newDPPhase()
	r.admin.phase.Store(p)
	m0 := r.metrics(ctx)
	before := r.totals()
	var cb dpChattyBase
	if chatty {
		cb = r.chattyBase()
	}
	start := time.Now().Add(dpStartAhead)
	dur := time.Duration(r.secs) * time.Second
	var wg sync.WaitGroup
	for i, d := range r.devs {
		off := time.Duration(i) * time.Second / time.Duration(r.n)
		s := d.cur
		wg.Go(func() {
			for k := range r.secs {
				if sleepCtx(ctx, time.Until(start.Add(time.Duration(k)*time.Second+off))) != nil {
					return
				}
				if s.isDone() {
					return
				}
				d.send(s)
			}
		})
	}
	var cr *DPChatty
	if chatty {
		cr = &DPChatty{SN: r.chatty.sn, Rate: dpChattyRate, Closes: map[string]int{}}
		wg.Go(func() { r.runChatty(ctx, start, dur, cr) })
	}
	if err := sleepCtx(ctx, time.Until(start)); err != nil {
		wg.Wait()
		return nil, err
	}
	c0, err := r.cpu()
	if err != nil {
		wg.Wait()
		return nil, err
	}
	wg.Wait()
	c1, err := r.cpu()
	if err != nil {
		return nil, err
	}
	wall := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("phase cut short: %w", err)
	}
	if err := sleepCtx(ctx, dpDrain); err != nil {
		return nil, err
	}
	r.admin.phase.Store(nil)
	after := r.totals()
	m1 := r.metrics(ctx)

	res.Seconds = wall.Seconds()
	res.Sent = after.sent - before.sent
	res.Acked = after.acked - before.acked
	res.Limited = after.limited - before.limited
	res.Errors = after.errs - before.errs
	res.WriteErrors = after.writeErrs - before.writeErrs
	res.Unanswered = res.Sent - res.Acked - res.Limited - res.Errors
	res.Pushes = after.pushes - before.pushes
	res.StalePushes = after.stale - before.stale
	res.AckedPerSec = float64(res.Acked) / res.Seconds
	res.PushesPerSec = float64(res.Pushes) / res.Seconds
	q, cnt := p.lat.Quantiles(0.5, 0.99)
	res.LatencyCount, res.P50Ms, res.P99Ms = cnt, ms(q[0]), ms(q[1])
	res.MaxMs = ms(time.Duration(p.latMax.Load()))
	q, _ = p.ack.Quantiles(0.5, 0.99)
	res.AckP50Ms, res.AckP99Ms = ms(q[0]), ms(q[1])
	for i, d := range r.devs {
		la, ls := d.lastAcked.Load(), r.admin.lastSeen[i].Load()
		if ls < la {
			res.Behind++
			if len(res.BehindSample) < dpSample {
				res.BehindSample = append(res.BehindSample, fmt.Sprintf("%s: acked seq %d, admin saw seq %d", d.sn, la, ls))
			}
		}
		if d.cur.isDone() {
			res.Disconnected++
		}
	}
	secs := wall.Seconds()
	res.CPUASeconds = (c1.a - c0.a).Seconds()
	res.CPUBSeconds = (c1.b - c0.b).Seconds()
	res.CPUTestSeconds = (c1.test - c0.test).Seconds()
	res.CPUOtherSeconds = max(0, (c1.sys-c0.sys).Seconds()-res.CPUASeconds-res.CPUBSeconds-res.CPUTestSeconds)
	res.CPUAPercent = 100 * res.CPUASeconds / secs
	res.CPUBPercent = 100 * res.CPUBSeconds / secs
	res.CPUTestPercent = 100 * res.CPUTestSeconds / secs
	res.CPUOtherPercent = 100 * res.CPUOtherSeconds / secs
	if m0 != nil && m1 != nil {
		res.HubDelta = map[string]map[string]float64{}
		for node, vals := range m1 {
			d := map[string]float64{}
			for k, v := range vals {
				d[k] = v - m0[node][k]
			}
			res.HubDelta[node] = d
		}
	}
	if chatty {
		r.finishChatty(cr, cb, p, start, wall)
		res.Chatty = cr
	}
	return res, nil
}

// dpChattyBase is the chatty device's counters at a phase start.
type dpChattyBase struct{ sent, writeErrs, acked, limited, errs, pushes int64 }

func (r *dpRun) chattyBase() dpChattyBase {
	d := r.chatty
	return dpChattyBase{d.sent.Load(), d.writeErrs.Load(), d.acked.Load(), d.limited.Load(), d.errs.Load(), r.admin.pushes[d.idx].Load()}
}

// runChatty paces the chatty device at dpChattyRate reports per second
// from start for dur: on each tick it sends the reports due. When the hub
// ends its session, the reports due until it has a new one are dropped; it
// dials again r.backoff after the end (never when r.backoff < 0).
func (r *dpRun) runChatty(ctx context.Context, start time.Time, dur time.Duration, cr *DPChatty) {
	d := r.chatty
	total := int64(dur.Seconds() * dpChattyRate)
	s := d.cur
	cr.Sessions = 1
	var nextDial time.Time
	tick := time.NewTicker(dpChattyTick)
	defer tick.Stop()
	due := func(now time.Time) int64 {
		if now.Before(start) {
			return 0
		}
		return min(total, int64(now.Sub(start).Seconds()*dpChattyRate)+1)
	}
	for cr.Offered < total {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		if s != nil && s.isDone() {
			s = nil
			nextDial = d.cur.endedAt.Add(r.backoff)
		}
		if s == nil && r.backoff >= 0 && !now.Before(nextDial) {
			if ns, err := r.dial(ctx, r.b.WSURL, d); err != nil {
				cr.DialErrors++
				r.errs.add("%s: reconnect: %v", d.sn, err)
				nextDial = time.Now().Add(max(r.backoff, 100*time.Millisecond))
			} else {
				s = ns
				cr.Sessions++
			}
			now = time.Now()
		}
		for want := due(now); cr.Offered < want; cr.Offered++ {
			if s == nil || s.isDone() {
				cr.Dropped++
				continue
			}
			d.send(s)
		}
	}
}

// finishChatty fills in what the chatty device did in the phase.
func (r *dpRun) finishChatty(cr *DPChatty, b dpChattyBase, p *dpPhase, start time.Time, wall time.Duration) {
	d := r.chatty
	cr.Sent = d.sent.Load() - b.sent
	cr.WriteErrors = d.writeErrs.Load() - b.writeErrs
	cr.Acked = d.acked.Load() - b.acked
	cr.Limited = d.limited.Load() - b.limited
	cr.Errors = d.errs.Load() - b.errs
	cr.Pushes = r.admin.pushes[d.idx].Load() - b.pushes
	cr.PushesPerS = float64(cr.Pushes) / wall.Seconds()
	q, _ := p.chattyLat.Quantiles(0.5, 0.99)
	cr.P50Ms, cr.P99Ms = ms(q[0]), ms(q[1])
	cr.MaxMs = ms(time.Duration(p.chattyLatMax.Load()))
	cr.LastAcked, cr.LastSeen = d.lastAcked.Load(), r.admin.lastSeen[d.idx].Load()
	cr.LastArrived = cr.LastSeen >= cr.LastAcked
	r.mu.Lock()
	sessions := slices.Clone(r.sessions)
	r.mu.Unlock()
	for _, s := range sessions {
		if s.dev != d {
			continue
		}
		cs := DPChattySession{OpenedMs: ms(s.opened.Sub(start)), Acked: s.acked.Load(), Limited: s.limited.Load(), Close: s.closeDesc()}
		if s.isDone() {
			cs.LifetimeMs = ms(s.endedAt.Sub(s.opened))
			cr.Closes[cs.Close]++
		} else {
			cs.LifetimeMs = ms(time.Since(s.opened))
		}
		cr.SessionLog = append(cr.SessionLog, cs)
	}
}

// dpStoreMax raises a to v if v is larger.
func dpStoreMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// dpPick sums each of dpMetricNames over its labels.
func dpPick(m Metrics) map[string]float64 {
	out := make(map[string]float64, len(dpMetricNames))
	for _, name := range dpMetricNames {
		out[strings.TrimPrefix(name, "fleethub_")] = m.Sum(name)
	}
	return out
}

// dpLogReport prints the report as one table.
func dpLogReport(t *testing.T, r *DPReport) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfleethub data plane: %s, %d CPUs, %.1fs; nodes dp-a (admin) and dp-b (devices) on one in-process NATS server; "+
		"%d devices at 1 report/s for %ds per phase; chatty device %d reports/s, reconnect after %d ms; coalesce window %.0f ms\n",
		r.GoVersion, r.NumCPU, r.Seconds, r.Devices, r.PhaseSeconds, r.ChattyRate, r.ChattyBackoffMs, r.CoalesceWindowMs)
	for _, n := range r.Nodes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	fmt.Fprintf(&b, "%-8s %7s %8s %8s %8s %8s %8s %8s %5s %5s %6s | %-7s %6s %6s %8s %8s %-5s | %6s %6s %6s %6s\n",
		"phase", "devices", "acked/s", "pushes/s", "p50 ms", "p99 ms", "max ms", "ack p99", "429s", "errs", "missed",
		"chatty", "acks", "429s", "sessions", "pushes/s", "last", "A cpu%", "B cpu%", "test%", "other%")
	for _, p := range r.Phases {
		errs := p.Errors + p.WriteErrors + p.Unanswered + int64(p.Disconnected)
		chatty := fmt.Sprintf("%-7s %6s %6s %8s %8s %-5s", "-", "-", "-", "-", "-", "-")
		if c := p.Chatty; c != nil {
			chatty = fmt.Sprintf("%-7s %6d %6d %8d %8.1f %-5s", "on", c.Acked, c.Limited, c.Sessions, c.PushesPerS, dpOK(c.LastArrived))
		}
		fmt.Fprintf(&b, "%-8s %7d %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %5d %5d %6d | %s | %6.1f %6.1f %6.1f %6.1f\n",
			p.Phase, p.Devices, p.AckedPerSec, p.PushesPerSec, p.P50Ms, p.P99Ms, p.MaxMs, p.AckP99Ms, p.Limited, errs, p.Behind,
			chatty, p.CPUAPercent, p.CPUBPercent, p.CPUTestPercent, p.CPUOtherPercent)
	}
	b.WriteString("(latency: admin receipt on dp-a - device send time, per /push/status of a normal device; ack p99: request written to response read;\n" +
		" missed: devices whose last acknowledged seq the admin had not seen " + dpDrain.String() + " after the phase; errs: other codes, write errors, unanswered, disconnects;\n" +
		" chatty last: the admin saw its last acknowledged status; cpu%: of one core over the sending span; test = this process, NATS server and clients)\n")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "%s: sent %d, acked %d, 429 %d, errors %d, write errors %d, unanswered %d, disconnected %d; admin pushes %d (stale %d), latency samples %d; ack p50 %.1f ms; CPU-s A %.2f B %.2f test %.2f other %.2f over %.1fs\n",
			p.Phase, p.Sent, p.Acked, p.Limited, p.Errors, p.WriteErrors, p.Unanswered, p.Disconnected, p.Pushes, p.StalePushes,
			p.LatencyCount, p.AckP50Ms, p.CPUASeconds, p.CPUBSeconds, p.CPUTestSeconds, p.CPUOtherSeconds, p.Seconds)
		if p.HubDelta != nil {
			fmt.Fprintf(&b, "  hub metric deltas: dp-a %s; dp-b %s\n", dpFmtMetrics(p.HubDelta["dp-a"]), dpFmtMetrics(p.HubDelta["dp-b"]))
		}
		if c := p.Chatty; c != nil {
			fmt.Fprintf(&b, "  chatty %s: offered %d, sent %d, dropped while offline %d, write errors %d; acked %d, 429 %d, other errors %d; "+
				"%d sessions (%d dial errors), ends %v; admin pushes %d (%.1f/s), latency p50 %.1f p99 %.1f max %.1f ms; last acked seq %d, last seen %d\n",
				c.SN, c.Offered, c.Sent, c.Dropped, c.WriteErrors, c.Acked, c.Limited, c.Errors, c.Sessions, c.DialErrors, c.Closes,
				c.Pushes, c.PushesPerS, c.P50Ms, c.P99Ms, c.MaxMs, c.LastAcked, c.LastSeen)
			for i, s := range c.SessionLog {
				if i == dpSample {
					fmt.Fprintf(&b, "    ... %d sessions in all\n", len(c.SessionLog))
					break
				}
				fmt.Fprintf(&b, "    session %d: opened at %+.0f ms, lived %.0f ms, acked %d, 429 %d, ended %q\n",
					i+1, s.OpenedMs, s.LifetimeMs, s.Acked, s.Limited, s.Close)
			}
		}
		for _, s := range p.BehindSample {
			fmt.Fprintf(&b, "  missed: %s\n", s)
		}
	}
	for node, m := range r.HubMetrics {
		fmt.Fprintf(&b, "%s metrics at the end: %s\n", node, dpFmtMetrics(m))
	}
	fmt.Fprintf(&b, "hub WARN/ERROR lines %v\n", r.HubLogProblems)
	for _, l := range r.HubLogSample {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, e := range r.ErrorSample {
		fmt.Fprintf(&b, "client: %s\n", e)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "ERROR: %s\n", e)
	}
	t.Log(b.String())
}

func dpFmtMetrics(m map[string]float64) string { return fmtSorted(m, " ") }

func dpOK(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}
