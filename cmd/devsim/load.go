package main

import (
	"container/heap"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/gorilla/websocket"
)

// progressEvery is the period of load mode's progress lines while it
// connects.
const progressEvery = 2 * time.Second

// LoadReport is what load mode measured. Latencies are in milliseconds.
type LoadReport struct {
	URLs             []string `json:"urls"`
	Devices          int      `json:"devices"`
	Concurrency      int      `json:"concurrency"`
	StatusIntervalMS int64    `json:"status_interval_ms"`
	DurationMS       int64    `json:"duration_ms"`
	// Interrupted is true when the run was stopped (SIGINT) before the
	// end of its measuring phase.
	Interrupted bool          `json:"interrupted"`
	Connect     ConnectReport `json:"connect"`
	Status      StatusReport  `json:"status"`
	// Disconnects counts connections that ended during the run other than
	// by devsim closing them (the SDK then reconnected them).
	Disconnects int64 `json:"disconnects"`
}

// ConnectReport measures the connect phase: client.Dial, that is TCP, the
// WebSocket upgrade and the /auth/device round trip.
type ConnectReport struct {
	Attempted int              `json:"attempted"`
	Connected int              `json:"connected"`
	Failed    int              `json:"failed"`
	Seconds   float64          `json:"seconds"`
	RatePerS  float64          `json:"rate_per_s"` // connected devices per second
	LatencyMS Latency          `json:"latency_ms"`
	Errors    map[string]int64 `json:"errors"` // by code: 401, 503, timeout, refused...
}

// StatusReport measures the status phase: ReportStatus round trips.
type StatusReport struct {
	Sent     int64   `json:"sent"`
	OK       int64   `json:"ok"`
	Failed   int64   `json:"failed"`
	Seconds  float64 `json:"seconds"`
	RatePerS float64 `json:"rate_per_s"` // answered 0 per second
	// Skipped counts reports not sent because the device's previous one
	// was still waiting for its answer.
	Skipped   int64            `json:"skipped"`
	LatencyMS Latency          `json:"latency_ms"`
	Errors    map[string]int64 `json:"errors"`
}

// Errors is the total of failed connects and failed status reports.
func (r *LoadReport) Errors() int64 {
	return int64(r.Connect.Failed) + r.Status.Failed
}

// runLoad connects cfg.Devices devices, at most cfg.Concurrency at a time,
// then has each report status every cfg.StatusInterval for cfg.Duration,
// and returns what it measured. Interrupted (ctx ended), it returns what it
// measured so far. It fails only when no device could connect.
func runLoad(ctx context.Context, cfg Config) (*LoadReport, error) {
	log := cfg.Logger
	rep := &LoadReport{
		URLs: cfg.URLs, Devices: cfg.Devices, Concurrency: cfg.Concurrency,
		StatusIntervalMS: cfg.StatusInterval.Milliseconds(), DurationMS: cfg.Duration.Milliseconds(),
	}
	var disconnects atomic.Int64
	clients := make([]*client.Client, cfg.Devices)
	defer closeAll(clients, cfg.Concurrency, log)

	log.Info("load: connecting", "devices", cfg.Devices, "concurrency", cfg.Concurrency, "urls", cfg.URLs)
	rep.Connect = connectAll(ctx, cfg, clients, &disconnects)
	log.Info("load: connected", "connected", rep.Connect.Connected, "failed", rep.Connect.Failed,
		"seconds", rep.Connect.Seconds, "rate_per_s", rep.Connect.RatePerS)
	if ctx.Err() != nil {
		rep.Interrupted = true
		rep.Disconnects = disconnects.Load()
		return rep, nil
	}
	if rep.Connect.Connected == 0 {
		return rep, fmt.Errorf("load: no device could connect (%s)", formatCodes(rep.Connect.Errors))
	}

	log.Info("load: reporting status", "devices", rep.Connect.Connected, "interval", cfg.StatusInterval, "duration", cfg.Duration)
	rep.Status = reportAll(ctx, cfg, clients)
	rep.Interrupted = ctx.Err() != nil
	rep.Disconnects = disconnects.Load()
	return rep, nil
}

// connectAll dials every device with cfg.Concurrency workers.
func connectAll(ctx context.Context, cfg Config, clients []*client.Client, disconnects *atomic.Int64) ConnectReport {
	var (
		next, connected, failed atomic.Int64
		lat                     latencies
		errs                    codes
		wg                      sync.WaitGroup
	)
	n := len(clients)
	dialer, sdkLog := newDialer(cfg.TLS), sdkLogger(cfg.Logger)
	start := time.Now()
	for range min(cfg.Concurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				dctx, cancel := context.WithTimeout(ctx, dialTimeout)
				t0 := time.Now()
				c, err := client.Dial(dctx, loadClientConfig(cfg, i, dialer, sdkLog, disconnects))
				d := time.Since(t0)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted: not the hub's failure
					}
					failed.Add(1)
					errs.add(errorCode(err))
					if cfg.abortOnCertificate(err) {
						return
					}
					cfg.Logger.Debug("load: connect failed", "sn", cfg.serial(i), "err", err)
					continue
				}
				lat.add(d)
				clients[i] = c
				connected.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTicker(progressEvery)
	defer t.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-t.C:
			c := connected.Load()
			cfg.Logger.Info("load: connecting", "connected", c, "failed", failed.Load(), "of", n,
				"rate_per_s", round1(float64(c)/time.Since(start).Seconds()))
		}
	}
	secs := time.Since(start).Seconds()
	c := int(connected.Load())
	return ConnectReport{
		Attempted: c + int(failed.Load()), Connected: c, Failed: int(failed.Load()),
		Seconds: round3(secs), RatePerS: round1(float64(c) / secs),
		LatencyMS: lat.summary(), Errors: errs.snapshot(),
	}
}

func loadClientConfig(cfg Config, i int, dialer *websocket.Dialer, sdkLog *slog.Logger, disconnects *atomic.Int64) client.Config {
	sn := cfg.serial(i)
	connected := false // touched only by OnState, which runs serially
	return client.Config{
		URLs:   cfg.urlsFor(i),
		Device: &client.DeviceAuth{SN: sn, Key: auth.DeviceKey(cfg.MasterSecret, sn), Type: types[i%len(types)]},
		OnCommand: func(context.Context, client.Command) client.Result {
			return client.Result{Values: map[string]any{"ok": true}}
		},
		OnState: func(s client.State) {
			switch s.Kind {
			case client.StateConnected:
				connected = true
			case client.StateDisconnected:
				if connected && !errors.Is(s.Err, client.ErrClosed) {
					disconnects.Add(1)
				}
				connected = false
			}
		},
		Dialer:     dialer,
		MinBackoff: 250 * time.Millisecond,
		MaxBackoff: 10 * time.Second,
		Logger:     sdkLog,
	}
}

// newDialer returns the WebSocket dialer every device shares: small read
// buffers and a pool of write buffers (used only while a frame is
// written), since thousands of idle connections each holding 8 KiB of
// buffers add up. tlsConfig (nil: the system's roots) is for wss:// URLs.
func newDialer(tlsConfig *tls.Config) *websocket.Dialer {
	return &websocket.Dialer{
		Proxy: http.ProxyFromEnvironment, HandshakeTimeout: 10 * time.Second,
		ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{},
		TLSClientConfig: tlsConfig,
	}
}

// reportAll has every connected device report status every
// cfg.StatusInterval (±20%) for cfg.Duration. One scheduler goroutine
// keeps the devices' next report times in a heap and starts a short-lived
// goroutine per report; a device whose previous report is still waiting
// skips its turn, so each device has at most one report in flight. The
// schedule does not wait for answers, so a slow hub shows in the latency
// rather than in fewer reports.
func reportAll(ctx context.Context, cfg Config, clients []*client.Client) StatusReport {
	var (
		sent, okN, failed, skipped atomic.Int64
		lat                        latencies
		errs                       codes
		wg                         sync.WaitGroup
	)
	busy := make([]atomic.Bool, len(clients))
	payloads := statusPayloads()
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var live []int
	for i, c := range clients {
		if c != nil {
			live = append(live, i)
		}
	}
	// The first reports spread evenly over one interval.
	h := make(schedule, 0, len(live))
	for k, i := range live {
		h = append(h, slot{at: start.Add(time.Duration(float64(cfg.StatusInterval) * float64(k) / float64(len(live)))), i: i})
	}
	heap.Init(&h)

	send := func(i int) {
		defer wg.Done()
		defer busy[i].Store(false)
		rctx, cancel := context.WithTimeout(ctx, reportTimeout)
		defer cancel()
		t0 := time.Now()
		err := clients[i].ReportStatus(rctx, payloads[i%len(payloads)])
		d := time.Since(t0)
		switch {
		case err == nil:
			okN.Add(1)
			lat.add(d)
		case ctx.Err() != nil:
			// interrupted: not counted
		default:
			failed.Add(1)
			errs.add(errorCode(err))
		}
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
run:
	for h.Len() > 0 {
		top := h[0]
		if !top.at.Before(deadline) {
			break
		}
		if wait := time.Until(top.at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				break run
			case <-timer.C:
			}
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if busy[top.i].CompareAndSwap(false, true) {
			sent.Add(1)
			wg.Add(1)
			go send(top.i)
		} else {
			skipped.Add(1)
		}
		h[0].at = top.at.Add(jittered(cfg.StatusInterval))
		heap.Fix(&h, 0)
	}
	window := cfg.Duration
	if ctx.Err() != nil {
		window = min(time.Since(start), cfg.Duration) // interrupted
	}
	wg.Wait() // every report ends within reportTimeout
	secs := window.Seconds()
	return StatusReport{
		Sent: sent.Load(), OK: okN.Load(), Failed: failed.Load(), Skipped: skipped.Load(),
		Seconds: round3(secs), RatePerS: round1(float64(okN.Load()) / math.Max(secs, 1e-9)),
		LatencyMS: lat.summary(), Errors: errs.snapshot(),
	}
}

// statusPayloads are the status reports load mode sends, encoded once:
// the shape and size of a simulated robot's.
func statusPayloads() []json.RawMessage {
	var out []json.RawMessage
	for k, typ := range types {
		s := sites[typ][0]
		rub := map[string]any{"code": 0, "msg": "no rubbish detected"}
		if typ == typeRubbish {
			rub = map[string]any{"code": 0, "msg": "ok", "fill": 40 + k}
		}
		b, _ := json.Marshal(map[string]any{
			"location":    map[string]any{"code": 0, "msg": "ok", "name": s.locations[0], "site": s.group},
			"inspection":  map[string]any{"code": 0, "msg": "ok"},
			"rubbish":     rub,
			"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 60 + 7*k, "charging": false},
			"activity":    actWorking,
		})
		out = append(out, b)
	}
	return out
}

// slot is a device's next report time.
type slot struct {
	at time.Time
	i  int
}

// schedule is a min-heap of slots by time.
type schedule []slot

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(a, b int) bool { return s[a].at.Before(s[b].at) }
func (s schedule) Swap(a, b int)      { s[a], s[b] = s[b], s[a] }
func (s *schedule) Push(x any)        { *s = append(*s, x.(slot)) }
func (s *schedule) Pop() any {
	old := *s
	x := old[len(old)-1]
	*s = old[:len(old)-1]
	return x
}

// closeAll closes the clients, concurrency at a time.
func closeAll(clients []*client.Client, concurrency int, log *slog.Logger) {
	var next atomic.Int64
	var wg sync.WaitGroup
	n := 0
	for _, c := range clients {
		if c != nil {
			n++
		}
	}
	if n == 0 {
		return
	}
	log.Info("load: closing", "devices", n)
	for range min(concurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(clients) {
					return
				}
				if c := clients[i]; c != nil {
					_ = c.Close()
				}
			}
		})
	}
	wg.Wait()
}

// errorCode names an error for the report: the hub's code (401, 429,
// 503...) or what went wrong on the way (timeout, refused...).
func errorCode(err error) string {
	var e *client.Error
	switch {
	case errors.As(err, &e):
		return strconv.Itoa(e.Code)
	case errors.Is(err, client.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, client.ErrReplaced):
		return "replaced"
	case errors.Is(err, client.ErrKicked):
		return "kicked"
	case errors.Is(err, client.ErrPolicy):
		return "policy"
	case errors.Is(err, client.ErrClosed):
		return "closed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_open_files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_local_port"
	case errors.Is(err, websocket.ErrBadHandshake):
		return "bad_handshake"
	case errors.Is(err, client.ErrDisconnected):
		return "disconnected"
	}
	return "network"
}

// write prints the report: a small table, or JSON.
func (r *LoadReport) write(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "devsim load: %d devices, concurrency %d, status every %v for %v, %s\n",
		r.Devices, r.Concurrency, time.Duration(r.StatusIntervalMS)*time.Millisecond,
		time.Duration(r.DurationMS)*time.Millisecond, strings.Join(r.URLs, ","))
	if r.Interrupted {
		b.WriteString("(interrupted)\n")
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tcount\tok\tfailed\ttime\trate\tp50\tp99\tmax\t")
	c := r.Connect
	fmt.Fprintf(tw, "connect\t%d\t%d\t%d\t%.2fs\t%.1f/s\t%s\t%s\t%s\t\n",
		c.Attempted, c.Connected, c.Failed, c.Seconds, c.RatePerS,
		fmtMS(c.LatencyMS.P50), fmtMS(c.LatencyMS.P99), fmtMS(c.LatencyMS.Max))
	s := r.Status
	fmt.Fprintf(tw, "status\t%d\t%d\t%d\t%.2fs\t%.1f/s\t%s\t%s\t%s\t\n",
		s.Sent, s.OK, s.Failed, s.Seconds, s.RatePerS,
		fmtMS(s.LatencyMS.P50), fmtMS(s.LatencyMS.P99), fmtMS(s.LatencyMS.Max))
	_ = tw.Flush()
	b.WriteString("\n")
	if len(c.Errors) == 0 && len(s.Errors) == 0 {
		b.WriteString("errors: none\n")
	} else {
		b.WriteString("errors:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, phase := range []struct {
			name string
			m    map[string]int64
		}{{"connect", c.Errors}, {"status", s.Errors}} {
			for _, k := range sortedKeys(phase.m) {
				fmt.Fprintf(tw, "  %s\t%s\t%d\n", phase.name, k, phase.m[k])
			}
		}
		_ = tw.Flush()
	}
	if s.Skipped > 0 {
		fmt.Fprintf(&b, "skipped status reports (previous one still unanswered): %d\n", s.Skipped)
	}
	if r.Disconnects > 0 {
		fmt.Fprintf(&b, "connections lost during the run (reconnected by the SDK): %d\n", r.Disconnects)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtMS(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "ms" }

func formatCodes(m map[string]int64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "no errors recorded"
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
