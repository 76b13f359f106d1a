package dcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Defaults and bounds of an Engine.
const (
	// DefaultInterval is how often a node announces its data centre.
	DefaultInterval = time.Second
	// AbsentAfter is how many announce intervals a data centre may stay
	// silent before it is absent (cut off from this node).
	AbsentAfter = 3
	// DefaultRecheck is how often the views' sources are checked again:
	// another node's update may have lost a source (read, then update),
	// and a source may report an error or have stalled.
	DefaultRecheck = 30 * time.Second
	// MaxDCs bounds the set of known data centres, this node's included:
	// an announce naming one more is counted and ignored.
	MaxDCs = 64
	// maxNodes bounds the nodes of this node's data centre it keeps track
	// of (to choose the one that maintains the views).
	maxNodes = 1024
)

// Config is what an Engine needs.
type Config struct {
	// Conn is the node's connection; announces travel on it.
	Conn *nats.Conn
	// JS is the node's JetStream (its domain), where the views live.
	JS jetstream.JetStream
	// DC is this node's data centre, a subject token; Node is the node's
	// id, also a token.
	DC, Node string
	// Domain is this node's JetStream domain; "" asks JS for it
	// (AccountInfo), and stays "" for a JetStream without a domain (one
	// cluster, or a supercluster).
	Domain string
	// Views are the aggregates to keep sourcing every data centre.
	Views []View
	// Sign signs an announce before it is published; Verify returns an
	// error for a message not signed by a node (the hub's control
	// signing, bound to the subject). Both are required: an unsigned
	// announce could make every node source a stream of the sender's
	// choosing.
	Sign   func(*nats.Msg)
	Verify func(*nats.Msg) error
	// Interval is the announce period (default DefaultInterval); a data
	// centre is absent after AbsentAfter intervals without an announce.
	Interval time.Duration
	// Recheck is the period of the views' full check (default
	// DefaultRecheck).
	Recheck time.Duration
	// Log receives the engine's lifecycle and warnings; nil discards.
	Log *slog.Logger
	// Metrics, when set, registers the engine's metrics.
	Metrics prometheus.Registerer
	// OnReturn, when set, is called (on the announce's delivery, so it
	// must not block) when data centre dc is heard again after it was
	// absent: a partition healed. The hub restarts there what followed
	// the other side across the link.
	OnReturn func(dc string)

	// noReturnKick leaves sources alone when a data centre returns, and
	// noHealthKick when they stall (tests measure what the kicks are
	// for).
	noReturnKick, noHealthKick bool
}

// DC is a known data centre.
type DC struct {
	// Name is the data centre's name; Domain its JetStream domain ("" for
	// one without, or when it shares this node's JetStream).
	Name, Domain string
	// Self is this node's data centre (always present).
	Self bool
	// Present: an announce from it arrived within the last AbsentAfter
	// intervals. A data centre learnt only from the views' sources is
	// known but not present until it is heard.
	Present bool
	// Since is when Present last changed (or the data centre was learnt).
	Since time.Time
	// Heard is the time of its last announce (zero: never heard).
	Heard time.Time
}

// dcState is what the engine keeps of one data centre. Guarded by
// Engine.mu.
type dcState struct {
	domain  string
	present bool
	since   time.Time
	heard   time.Time
}

// Engine announces this node's data centre, learns the others, and keeps
// the views' sources. Its methods are safe for concurrent use.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	absent  time.Duration // AbsentAfter intervals
	started time.Time     // when the node started listening to announces
	// warnRefused, warnViews and warnSend bound the warnings of refused
	// announces, failed upkeep and unsent announces.
	warnRefused, warnViews, warnSend rate.Sometimes

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sub    *nats.Subscription
	stop   sync.Once
	// wake tells the upkeep loop that work is pending (capacity 1: wakes
	// coalesce).
	wake chan struct{}

	// Lock order: mu is a leaf; no NATS or JetStream call is made while
	// it is held.
	mu sync.Mutex
	// dcs are the known data centres by name, this node's included.
	// Guarded by mu.
	dcs map[string]*dcState
	// nodes are the nodes of this data centre heard, with the time of
	// their last announce. Guarded by mu.
	nodes map[string]time.Time
	// ensure: the views' sources must be checked against dcs (a data
	// centre was learnt, or the periodic check). Guarded by mu.
	ensure bool
	// kicks are the data centres whose sources are to be dropped and
	// added back (they came back after being absent). Guarded by mu.
	kicks map[string]bool
	// checkHealth: look at the views' source states and kick the sources
	// that report an error or have stalled. Guarded by mu.
	checkHealth bool
}

// Start validates cfg, reads the data centres already sourced by the
// views (a node restarted during a partition still knows the others),
// creates or updates every view so that it sources every known data
// centre (this node's own at least: one data centre works without any
// announce), and starts announcing and listening. The engine's
// goroutines run until ctx ends or Stop.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Domain == "" {
		ai, err := jscreate.Retry(ctx, cfg.JS.AccountInfo)
		if err != nil {
			return nil, fmt.Errorf("dcs: account info: %w", err)
		}
		cfg.Domain = ai.Domain
	}
	m := newMetrics(cfg.Metrics)
	now := time.Now()
	e := &Engine{
		cfg: cfg, log: log.With("dc", cfg.DC), m: m,
		absent:      AbsentAfter * cfg.Interval,
		started:     now,
		warnRefused: rate.Sometimes{First: 3, Interval: 10 * time.Second},
		warnViews:   rate.Sometimes{First: 3, Interval: 10 * time.Second},
		warnSend:    rate.Sometimes{First: 3, Interval: 10 * time.Second},
		wake:        make(chan struct{}, 1),
		dcs:         map[string]*dcState{cfg.DC: {domain: cfg.Domain, present: true, since: now, heard: now}},
		nodes:       map[string]time.Time{cfg.Node: now},
		kicks:       map[string]bool{},
	}
	e.ctx, e.cancel = context.WithCancel(ctx)
	if err := e.learnFromViews(e.ctx); err != nil {
		e.cancel()
		return nil, err
	}
	// The node listens from now on: what it has heard since counts from
	// here (onHello reads started; it is not written again).
	e.started = time.Now()
	sub, err := cfg.Conn.Subscribe(subjects.DCHello, e.onHello)
	if err != nil {
		e.cancel()
		return nil, fmt.Errorf("dcs: subscribe: %w", err)
	}
	e.sub = sub
	if err := e.ensureViews(e.ctx, true); err != nil {
		e.cancel()
		_ = sub.Unsubscribe()
		return nil, err
	}
	e.updateGauges()
	e.log.Info("data centre engine started", "domain", cfg.Domain, "node", cfg.Node, "known", e.names())
	e.wg.Add(2)
	go func() { defer e.wg.Done(); e.announceLoop() }()
	go func() { defer e.wg.Done(); e.upkeepLoop() }()
	return e, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("no NATS connection"))
	}
	if c.JS == nil {
		errs = append(errs, errors.New("no JetStream"))
	}
	if !subjects.ValidToken(c.DC) {
		errs = append(errs, fmt.Errorf("data centre %q is not a subject token", c.DC))
	}
	if !subjects.ValidToken(c.Node) {
		errs = append(errs, fmt.Errorf("node %q is not a subject token", c.Node))
	}
	if c.Domain != "" && !subjects.ValidToken(c.Domain) {
		errs = append(errs, fmt.Errorf("domain %q is not a subject token", c.Domain))
	}
	if c.Sign == nil || c.Verify == nil {
		errs = append(errs, errors.New("announces need Sign and Verify"))
	}
	for i, v := range c.Views {
		if v.Config.Name == "" || v.Source == nil {
			errs = append(errs, fmt.Errorf("view %d: needs a stream name and a Source", i))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

// DCs returns the known data centres, sorted by name.
func (e *Engine) DCs() []DC {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]DC, 0, len(e.dcs))
	for name, st := range e.dcs {
		out = append(out, DC{Name: name, Domain: st.domain, Self: name == e.cfg.DC, Present: st.present, Since: st.since, Heard: st.heard})
	}
	slices.SortFunc(out, func(a, b DC) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Stop stops announcing and maintaining the views and waits for the
// engine's goroutines. It is idempotent.
func (e *Engine) Stop() {
	e.stop.Do(func() {
		e.cancel()
		// A callback in flight may still run after Unsubscribe: it only
		// touches state under mu and never blocks.
		_ = e.sub.Unsubscribe()
	})
	e.wg.Wait()
}

// Wait waits until the engine's goroutines have ended (after Stop, or
// once Start's ctx ended).
func (e *Engine) Wait() { e.wg.Wait() }

// names lists the known data centres.
func (e *Engine) names() []string {
	var out []string
	for _, d := range e.DCs() {
		out = append(out, d.Name)
	}
	return out
}

// signal wakes the upkeep loop.
func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// updateGauges sets the known and present gauges.
func (e *Engine) updateGauges() {
	e.mu.Lock()
	known, present := len(e.dcs), 0
	for _, st := range e.dcs {
		if st.present {
			present++
		}
	}
	e.mu.Unlock()
	e.m.known.Set(float64(known))
	e.m.present.Set(float64(present))
}
