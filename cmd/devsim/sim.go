package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/gorilla/websocket"
)

// Limits and defaults.
const (
	// maxDevices bounds the devices of one process: each holds a socket
	// (a file descriptor and, on loopback, an ephemeral port), and the
	// hub's own connections need room too.
	maxDevices = 18000
	// fdHeadroom is what the process needs besides one fd per device.
	fdHeadroom = 64

	defaultLoadDuration = 10 * time.Second
	// minStatusInterval is the shortest status interval that stays within
	// the hub's storm limit (10 reports/s per device).
	minStatusInterval = 100 * time.Millisecond
	// maxEventRate is the hub's storm limit on normal events, per minute.
	maxEventRate = 300

	// reportTimeout bounds one status or event report, waiting for a
	// connection included.
	reportTimeout = 10 * time.Second
	// dialTimeout bounds one client.Dial (every URL once).
	dialTimeout = 15 * time.Second
	// summaryEvery is the period of the simulator's fleet summary line.
	summaryEvery = time.Minute
	// pushQueue is how many received pushes a robot holds before it has
	// reported them as events; beyond, a push is counted and not reported.
	pushQueue = 32
)

// Config is what a run of devsim does. main fills it from the flags; tests
// fill it directly.
type Config struct {
	// URLs are the hub's WebSocket endpoints; devices spread their first
	// attempt over them and fail over round-robin.
	URLs []string
	// Devices is how many devices to run (1 to maxDevices).
	Devices int
	// Prefix starts every serial number: Prefix + a zero-padded index.
	Prefix string
	// MasterSecret is the hub's master secret; each device's key derives
	// from it (auth.DeviceKey).
	MasterSecret []byte
	// StatusInterval is the period of status reports, jittered ±20%.
	StatusInterval time.Duration
	// EventRate is the random events per device per minute (simulation).
	EventRate float64
	// DisconnectRate is the random disconnects per device per hour
	// (simulation): the device closes and comes back 1 to 8 s later.
	DisconnectRate float64
	// Duration bounds the run; 0 runs until ctx ends (simulation) or
	// defaultLoadDuration (load mode, for its measuring phase).
	Duration time.Duration

	// Load selects load mode: connect every device as fast as Concurrency
	// allows, then measure status round trips.
	Load bool
	// Concurrency is how many connections load mode opens at once.
	Concurrency int
	// JSON makes load mode print its report as JSON.
	JSON bool

	// TLS configures wss:// connections (--tls-ca); nil trusts the
	// system's roots.
	TLS *tls.Config

	// Logger receives the lifecycle logs; nil discards them.
	Logger *slog.Logger
	// Out receives load mode's report; nil discards it.
	Out io.Writer

	// abort ends the run with a cause; Run sets it (see certAbort).
	abort context.CancelCauseFunc
}

// validate reports every problem with the configuration at once.
func (c *Config) validate() error {
	var errs []error
	if len(c.URLs) == 0 {
		errs = append(errs, errors.New("--url: at least one URL is required"))
	}
	for _, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "ws" && p.Scheme != "wss") || p.Host == "" {
			errs = append(errs, fmt.Errorf("--url %q: want ws://host:port/ws or wss://host:port/ws", u))
		}
	}
	switch {
	case c.Devices < 1:
		errs = append(errs, fmt.Errorf("--devices %d: want at least 1", c.Devices))
	case c.Devices > maxDevices:
		errs = append(errs, fmt.Errorf("--devices %d: at most %d devices per process (each needs a socket and a loopback port); run several devsim processes with different --prefix",
			c.Devices, maxDevices))
	default:
		if limit, ok := fdLimit(); ok && uint64(c.Devices)+fdHeadroom > limit {
			errs = append(errs, fmt.Errorf("--devices %d: the open-file limit is %d, which leaves room for %d devices; raise it (ulimit -n) or run fewer devices",
				c.Devices, limit, max(0, int64(limit)-fdHeadroom)))
		}
	}
	if c.Devices >= 1 && c.Devices <= maxDevices && !auth.ValidSerial(c.serial(c.Devices-1)) {
		errs = append(errs, fmt.Errorf("--prefix %q: serial numbers such as %q must be 1 to 64 characters of A-Z a-z 0-9 _ -",
			c.Prefix, c.serial(c.Devices-1)))
	}
	if len(c.MasterSecret) == 0 {
		errs = append(errs, errors.New("--master-secret (or HUB_MASTER_SECRET) is required unless --dev"))
	}
	if c.StatusInterval <= 0 {
		errs = append(errs, fmt.Errorf("--status-interval %v: must be positive", c.StatusInterval))
	}
	if c.EventRate < 0 || c.EventRate > maxEventRate {
		errs = append(errs, fmt.Errorf("--event-rate %v: want 0 to %d events per device per minute (the hub's storm limit)", c.EventRate, maxEventRate))
	}
	if c.DisconnectRate < 0 || c.DisconnectRate > 3600 {
		errs = append(errs, fmt.Errorf("--disconnect-rate %v: want 0 to 3600 per device per hour", c.DisconnectRate))
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("--duration %v: must not be negative", c.Duration))
	}
	if c.Load && (c.Concurrency < 1 || c.Concurrency > maxDevices) {
		errs = append(errs, fmt.Errorf("--concurrency %d: want 1 to %d", c.Concurrency, maxDevices))
	}
	return errors.Join(errs...)
}

// serial is the serial number of device i (from 0): the prefix and i+1,
// zero-padded to at least four digits and to the width of the largest.
func (c *Config) serial(i int) string {
	width := max(4, len(strconv.Itoa(c.Devices)))
	return fmt.Sprintf("%s%0*d", c.Prefix, width, i+1)
}

// urlsFor returns the URLs rotated so that device i tries URLs[i%n]
// first: devices spread over the nodes and fail over to the others.
func (c *Config) urlsFor(i int) []string {
	n := len(c.URLs)
	k := i % n
	return append(append([]string(nil), c.URLs[k:]...), c.URLs[:k]...)
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Load && c.Duration == 0 {
		c.Duration = defaultLoadDuration
	}
	return c
}

// Run validates cfg and runs the simulation, or load mode, until ctx ends
// or cfg.Duration has passed. Load mode writes its report to cfg.Out.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	ctx, cfg.abort = context.WithCancelCause(ctx)
	defer cfg.abort(nil)
	if cfg.Load {
		rep, err := runLoad(ctx, cfg)
		if cerr := certAbortOf(ctx); cerr != nil {
			return cerr
		}
		if rep != nil {
			if werr := rep.write(cfg.Out, cfg.JSON); werr != nil && err == nil {
				err = werr
			}
		}
		return err
	}
	_, err := simulate(ctx, cfg)
	if cerr := certAbortOf(ctx); cerr != nil {
		return cerr
	}
	return err
}

// simStats counts what the simulated fleet did.
type simStats struct {
	Connects, Online                 atomic.Int64
	Reports, ReportErrors            atomic.Int64
	Events, EventErrors              atomic.Int64
	Commands                         atomic.Int64
	Pushes, PushesUnreported         atomic.Int64
	SimDisconnects, HubDisconnects   atomic.Int64
	DialFailures, RateLimited, Stops atomic.Int64
}

func (s *simStats) logAttrs() []any {
	return []any{
		"online", s.Online.Load(), "connects", s.Connects.Load(),
		"reports", s.Reports.Load(), "report_errors", s.ReportErrors.Load(),
		"events", s.Events.Load(), "event_errors", s.EventErrors.Load(),
		"rate_limited", s.RateLimited.Load(), "commands", s.Commands.Load(),
		"pushes", s.Pushes.Load(), "pushes_unreported", s.PushesUnreported.Load(),
		"simulated_disconnects", s.SimDisconnects.Load(), "hub_disconnects", s.HubDisconnects.Load(),
		"dial_failures", s.DialFailures.Load(), "stopped", s.Stops.Load(),
	}
}

// fleet is a running simulation.
type fleet struct {
	cfg    Config
	log    *slog.Logger
	sdkLog *slog.Logger
	dialer *websocket.Dialer
	stats  *simStats
}

// simulate runs cfg.Devices robots until ctx ends or cfg.Duration passes,
// then closes them all and returns what they did.
func simulate(ctx context.Context, cfg Config) (*simStats, error) {
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	f := &fleet{cfg: cfg, log: cfg.Logger, sdkLog: sdkLogger(cfg.Logger), dialer: newDialer(cfg.TLS), stats: &simStats{}}
	f.log.Info("simulation starting", "devices", cfg.Devices, "urls", cfg.URLs,
		"status_interval", cfg.StatusInterval, "event_rate_per_min", cfg.EventRate,
		"disconnect_rate_per_hour", cfg.DisconnectRate, "duration", cfg.Duration)
	// Robots start spread over a moment, not in one wave.
	spread := min(cfg.StatusInterval, time.Duration(cfg.Devices)*20*time.Millisecond, 5*time.Second)
	now := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.Devices {
		r := newRobot(i, cfg.serial(i), now)
		delay := time.Duration(0)
		if spread > 0 {
			delay = jitterRange(0, spread)
		}
		wg.Go(func() { f.runRobot(ctx, i, r, delay) })
	}
	t := time.NewTicker(summaryEvery)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			f.log.Info("fleet", f.stats.logAttrs()...)
		}
	}
	wg.Wait()
	f.log.Info("simulation ended", f.stats.logAttrs()...)
	return f.stats, nil
}

// runRobot keeps robot r connected, reporting and answering, until ctx
// ends; it goes offline now and then on purpose.
func (f *fleet) runRobot(ctx context.Context, i int, r *robot, delay time.Duration) {
	if !sleepCtx(ctx, delay) {
		return
	}
	key := auth.DeviceKey(f.cfg.MasterSecret, r.sn)
	log := f.log.With("sn", r.sn)
	// Pushes received, to report as events (see live). Kept across
	// connections: one received just before a drop is still reported.
	pushes := make(chan client.Push, pushQueue)
	failures := 0
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		c, err := client.Dial(dctx, f.clientConfig(i, r, key, pushes, log))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			f.stats.DialFailures.Add(1)
			if f.cfg.abortOnCertificate(err) {
				return
			}
			var e *client.Error
			switch {
			case errors.As(err, &e) && (e.Code == 401 || e.Code == 403):
				if failures == 1 {
					log.Error("hub refused the robot: check --master-secret (and the registry, with --require-registered)", "code", e.Code, "msg", e.Msg)
				}
			case failures == 1:
				log.Warn("robot cannot connect, retrying", "err", err)
			default:
				log.Debug("robot cannot connect, retrying", "err", err, "failures", failures)
			}
			if !sleepCtx(ctx, retryDelay(failures)) {
				return
			}
			continue
		}
		failures = 0
		pause, stop := f.live(ctx, c, r, pushes, log)
		_ = c.Close()
		if stop || !sleepCtx(ctx, pause) {
			return
		}
	}
}

// retryDelay is the wait after the n-th failed dial in a row: full jitter
// up to 500ms·2^n, capped at 30 s.
func retryDelay(n int) time.Duration {
	ceiling := 500 * time.Millisecond << min(n, 6)
	return jitterRange(0, min(ceiling, 30*time.Second)+1)
}

func (f *fleet) clientConfig(i int, r *robot, key []byte, pushes chan<- client.Push, log *slog.Logger) client.Config {
	connected := false // touched only by OnState, which runs serially
	return client.Config{
		URLs:   f.cfg.urlsFor(i),
		Device: &client.DeviceAuth{SN: r.sn, Key: key, Type: r.typ},
		// Every push is reported back as a push_received event naming its
		// id, so whoever pushed can see which robots got it. OnPush must
		// not block the client, hence the queue.
		OnPush: func(p client.Push) {
			f.stats.Pushes.Add(1)
			log.Debug("push", "service", p.Service, "id", p.ID)
			select {
			case pushes <- p:
			default:
				f.stats.PushesUnreported.Add(1)
				log.Warn("push not reported: too many pushes waiting", "service", p.Service, "id", p.ID)
			}
		},
		OnCommand: func(ctx context.Context, cmd client.Command) client.Result {
			f.stats.Commands.Add(1)
			res := r.handle(ctx, cmd)
			log.Debug("command", "service", cmd.Service, "code", res.Code)
			return res
		},
		OnState: func(s client.State) {
			switch s.Kind {
			case client.StateConnected:
				connected = true
				f.stats.Connects.Add(1)
				f.stats.Online.Add(1)
				log.Info("robot connected", "type", s.Session.Type, "group", s.Session.Group,
					"site", r.site.group, "node", s.Session.Node, "url", s.URL)
			case client.StateDisconnected:
				if !connected {
					log.Debug("connection attempt failed", "url", s.URL, "err", s.Err)
					return
				}
				connected = false
				f.stats.Online.Add(-1)
				if !errors.Is(s.Err, client.ErrClosed) {
					f.stats.HubDisconnects.Add(1)
					log.Info("robot disconnected", "url", s.URL, "close_code", s.CloseCode, "reason", s.Err)
				}
			}
		},
		Dialer:     f.dialer,
		MinBackoff: 250 * time.Millisecond,
		MaxBackoff: 15 * time.Second,
		Logger:     f.sdkLog,
	}
}

// live runs one connected client: status reports, random events, the
// push_received events of pushes, and commands, until ctx ends (stop), the
// hub ends the client for good, or a simulated disconnect is due (then
// pause says how long to stay away).
func (f *fleet) live(ctx context.Context, c *client.Client, r *robot, pushes <-chan client.Push, log *slog.Logger) (pause time.Duration, stop bool) {
	status := time.NewTimer(0) // the first report goes at once
	defer status.Stop()
	var events, drops <-chan time.Time // nil: never
	var dropTimer *time.Timer
	if f.cfg.DisconnectRate > 0 {
		dropTimer = time.NewTimer(expDelay(time.Duration(float64(time.Hour) / f.cfg.DisconnectRate)))
		defer dropTimer.Stop()
		drops = dropTimer.C
	}
	var eventTimer *time.Timer
	if f.cfg.EventRate > 0 {
		eventTimer = time.NewTimer(expDelay(f.eventMean()))
		defer eventTimer.Stop()
		events = eventTimer.C
	}
	for {
		select {
		case <-ctx.Done():
			return 0, true
		case <-c.Done():
			err := c.Err()
			if errors.Is(err, client.ErrReplaced) {
				f.stats.Stops.Add(1)
				log.Warn("robot replaced by another session with its serial number; it stops (is another devsim using the same --prefix?)")
				return 0, true
			}
			log.Warn("hub ended the robot's session, reconnecting", "err", err)
			return jitterRange(time.Second, 5*time.Second), false
		case <-status.C:
			st, evs := r.status(time.Now())
			f.report(ctx, c, st, log)
			for _, ev := range evs {
				f.event(ctx, c, ev, log)
			}
			status.Reset(jittered(f.cfg.StatusInterval))
		case <-events:
			f.event(ctx, c, r.randomEvent(), log)
			eventTimer.Reset(expDelay(f.eventMean()))
		case p := <-pushes:
			f.event(ctx, c, pushReceived(p), log)
		case <-drops:
			pause := jitterRange(time.Second, 8*time.Second+1)
			f.stats.SimDisconnects.Add(1)
			log.Info("robot going offline (simulated)", "back_in", pause.Round(time.Millisecond))
			return pause, false
		}
	}
}

// pushReceived is the event a robot reports for a push it got.
func pushReceived(p client.Push) event {
	return event{"push_received", "normal", map[string]any{"id": p.ID, "service": p.Service}}
}

func (f *fleet) eventMean() time.Duration {
	return time.Duration(float64(time.Minute) / f.cfg.EventRate)
}

func (f *fleet) report(ctx context.Context, c *client.Client, st map[string]any, log *slog.Logger) {
	rctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	if err := c.ReportStatus(rctx, st); err != nil {
		f.failed(ctx, err, &f.stats.ReportErrors, log, "status report failed")
		return
	}
	f.stats.Reports.Add(1)
}

func (f *fleet) event(ctx context.Context, c *client.Client, ev event, log *slog.Logger) {
	rctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	if err := c.ReportEvent(rctx, ev.name, ev.priority, ev.data); err != nil {
		f.failed(ctx, err, &f.stats.EventErrors, log, "event report failed", "event", ev.name)
		return
	}
	f.stats.Events.Add(1)
	log.Debug("event", "event", ev.name, "priority", ev.priority)
}

// failed counts and logs a failed report. Failures that come from the run
// ending are not failures.
func (f *fleet) failed(ctx context.Context, err error, n *atomic.Int64, log *slog.Logger, msg string, attrs ...any) {
	if ctx.Err() != nil || errors.Is(err, client.ErrClosed) {
		return
	}
	n.Add(1)
	var e *client.Error
	if errors.As(err, &e) && e.Code == 429 {
		f.stats.RateLimited.Add(1)
		log.Debug(msg, append(attrs, "err", err)...)
		return
	}
	log.Warn(msg, append(attrs, "err", err)...)
}

// sdkLogger is the logger handed to the SDK: its connection chatter (it
// logs every connect and disconnect at info) shows only at debug level,
// since the simulator logs the lifecycle itself; warnings always show.
func sdkLogger(base *slog.Logger) *slog.Logger {
	floor := slog.LevelWarn
	if base.Enabled(context.Background(), slog.LevelDebug) {
		floor = slog.LevelDebug
	}
	return slog.New(minLevel{base.Handler(), floor}).With("component", "sdk")
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
