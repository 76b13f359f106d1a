package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Lost stores and their re-creation.
//
// Every bucket and stream the node needs is a store: how to create it and
// the feeds (watchers and consumers) that read it. A store found missing
// is created again at once, with the config the node would give it at
// start, and its feeds are started anew. Creating is create-or-update:
// nodes creating the same store at once all succeed (JetStream takes an
// identical create as a no-op; a node whose config differs loses the race
// and updates instead).
//
// A node finds a store missing in two ways: an operation on it fails in a
// way that says its stream is gone (no stream answers on its subjects,
// "stream not found"), and a periodic check, one stream-info call per
// store. Feeds must start anew also when another node re-created the
// store: a watcher on a deleted stream stops, and one that nats.go
// re-attaches to a new stream of the same name waits for sequences past
// the old stream's last, which the new one reaches only much later. The
// check sees that a store was re-created by its creation time.
const (
	// storeCallTimeout bounds one stream-info call of the periodic check;
	// a JetStream that does not answer within it is reported not ready.
	storeCallTimeout = 2 * time.Second
	// storeHealTimeout bounds creating a missing store again.
	storeHealTimeout = 10 * time.Second
	// feedLoadTimeout bounds the wait for a feed started anew to deliver
	// what its store holds.
	feedLoadTimeout = 30 * time.Second
)

// store is one bucket or stream the node needs.
type store struct {
	name   string // as operators know it: hub_nonces, HUB_STATUS
	stream string // its JetStream stream: KV_hub_nonces, HUB_STATUS
	create func(ctx context.Context) error
	// recreated, when set, runs when the store was created again (here or
	// elsewhere), before its feeds start anew.
	recreated func()
	feeds     []*feed

	missing atomic.Bool // found missing, not yet created again
	suspect atomic.Bool // an operation failed as if it were gone: check it

	mu      sync.Mutex // serialises heal
	created time.Time  // the stream's creation time, as last seen. Guarded by mu.
}

// feed is a watcher or consumer of a store. start starts it, to run until
// ctx ends, and returns a channel closed once it has delivered what the
// store held; fresh says that the store was created again since the feed
// last started.
type feed struct {
	start func(ctx context.Context, fresh bool) (<-chan struct{}, error)

	mu     sync.Mutex
	cancel context.CancelFunc // ends the running feed. Guarded by mu.
}

// run starts the feed, ending the one that ran before.
func (f *feed) run(runCtx context.Context, fresh bool) (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
	ctx, cancel := context.WithCancel(runCtx)
	loaded, err := f.start(ctx, fresh)
	if err != nil {
		cancel()
		f.cancel = nil
		return nil, err
	}
	f.cancel = cancel
	return loaded, nil
}

// storeSet is the stores the node needs, and their health.
type storeSet struct {
	srv  *Server
	kick chan struct{} // a check is wanted now

	mu   sync.Mutex
	list []*store // in the order Start opened them. Guarded by mu.

	jsDown atomic.Bool // JetStream did not answer the last check
}

func newStoreSet(srv *Server) *storeSet {
	ss := &storeSet{srv: srv, kick: make(chan struct{}, 1)}
	ss.jsDown.Store(true) // until Start has seen JetStream answer
	return ss
}

// reset forgets the stores of a Start that failed.
func (ss *storeSet) reset() {
	ss.mu.Lock()
	ss.list = nil
	ss.mu.Unlock()
}

// add records a store that Start has just opened, with its creation time,
// and starts its feeds, to run until runCtx ends; it returns once they
// have delivered what the store holds (or ctx ends, or feedLoadTimeout
// has passed: Start is then tried again). The look-up has its own timeout
// and is tried again while JetStream forms.
func (ss *storeSet) add(ctx, runCtx context.Context, st *store) error {
	info, err := jscreate.Retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return ss.srv.js.Stream(ctx, st.stream) })
	if err != nil {
		return fmt.Errorf("hub: %s: %w", st.name, err)
	}
	st.created = info.CachedInfo().Created
	ss.mu.Lock()
	ss.list = append(ss.list, st)
	ss.mu.Unlock()
	// Its series at 0 from the start (exportZeros).
	ss.srv.metrics.storesRecreated.WithLabelValues(st.name)
	ss.srv.metrics.storeHealFailures.WithLabelValues(st.name)
	if len(st.feeds) > 0 {
		ss.srv.metrics.storeFeedRestarts.WithLabelValues(st.name)
	}
	for _, f := range st.feeds {
		loaded, err := f.run(runCtx, false)
		if err != nil {
			return fmt.Errorf("hub: %s: %w", st.name, err)
		}
		t := time.NewTimer(feedLoadTimeout)
		select {
		case <-loaded:
			t.Stop()
		case <-t.C:
			return fmt.Errorf("hub: load %s: not loaded within %v", st.name, feedLoadTimeout)
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("hub: load %s: %w", st.name, ctx.Err())
		}
	}
	return nil
}

func (ss *storeSet) get(name string) *store {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, st := range ss.list {
		if st.name == name {
			return st
		}
	}
	return nil
}

func (ss *storeSet) all() []*store {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]*store(nil), ss.list...)
}

// storeGone reports whether err says that the stream behind an operation
// is gone: a publish or direct get that no stream answered, or an API
// call answered "stream not found".
func storeGone(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}

// lost is told of a failed operation on store name. When the failure says
// the store is gone, it has the store checked (and created again) at once,
// asynchronously, and reports true.
func (ss *storeSet) lost(name string, err error) bool {
	if err == nil || !storeGone(err) {
		return false
	}
	if st := ss.get(name); st != nil {
		st.suspect.Store(true)
	}
	select {
	case ss.kick <- struct{}{}:
	default:
	}
	return true
}

// heal makes sure store name exists, creating it again if it is missing,
// and waits for that: for callers that retry their operation after it.
func (ss *storeSet) heal(ctx context.Context, name string) error {
	st := ss.get(name)
	if st == nil {
		return fmt.Errorf("hub: unknown store %s", name)
	}
	return ss.healStore(ctx, st)
}

// healStore looks the store up and creates it again if it is missing. When
// it was created again, here or by another node, its feeds start anew.
func (ss *storeSet) healStore(ctx context.Context, st *store) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.suspect.Store(false)
	info, err := ss.srv.js.Stream(ctx, st.stream)
	switch {
	case err == nil:
		if info.CachedInfo().Created.Equal(st.created) {
			st.missing.Store(false)
			return nil
		}
		ss.srv.log.Warn("store was created again elsewhere; following it anew", "store", st.name)
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st.missing.Store(true)
		if err := st.create(ctx); err != nil {
			ss.srv.metrics.storeHealFailures.WithLabelValues(st.name).Inc()
			return fmt.Errorf("hub: create %s again: %w", st.name, err)
		}
		if info, err = ss.srv.js.Stream(ctx, st.stream); err != nil {
			return fmt.Errorf("hub: %s: %w", st.name, err)
		}
		ss.srv.metrics.storesRecreated.WithLabelValues(st.name).Inc()
		ss.srv.log.Warn("store was missing; created it again", "store", st.name)
	default:
		return fmt.Errorf("hub: %s: %w", st.name, err)
	}
	st.created = info.CachedInfo().Created
	st.missing.Store(false)
	if st.recreated != nil {
		st.recreated()
	}
	if len(st.feeds) > 0 {
		ss.srv.metrics.storeFeedRestarts.WithLabelValues(st.name).Inc()
		ss.srv.goTask(func() { ss.restartFeeds(st) })
	}
	return nil
}

// restartFeeds starts a re-created store's feeds anew, one after the
// other. A feed that cannot start has its store looked at again by the
// next check.
func (ss *storeSet) restartFeeds(st *store) {
	runCtx := ss.srv.runCtx
	for _, f := range st.feeds {
		loaded, err := f.run(runCtx, true)
		if err != nil {
			if runCtx.Err() == nil {
				ss.srv.log.Warn("feed of a store created again did not start; trying again", "store", st.name, "err", err)
				st.mu.Lock()
				st.created = time.Time{} // the next check starts the feeds anew
				st.mu.Unlock()
			}
			return
		}
		t := time.NewTimer(feedLoadTimeout)
		select {
		case <-loaded:
		case <-t.C:
		case <-runCtx.Done():
		}
		t.Stop()
	}
}

// run checks the stores every StoreCheckInterval, and at once when an
// operation found one gone, until ctx ends.
func (ss *storeSet) run(ctx context.Context) {
	t := time.NewTicker(ss.srv.cfg.StoreCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ss.check(ctx, false)
		case <-ss.kick:
			ss.check(ctx, true)
		}
	}
}

// check looks every store up (or, when only, the suspect ones), one
// stream-info call each, and heals those that are missing or were created
// again elsewhere. A call that JetStream does not answer ends the check:
// the node is then not ready until a check goes through.
func (ss *storeSet) check(ctx context.Context, only bool) {
	if !ss.srv.nc.IsConnected() {
		return
	}
	for _, st := range ss.all() {
		if only && !st.suspect.Load() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
		info, err := ss.srv.js.Stream(cctx, st.stream)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			if ctx.Err() == nil && !ss.jsDown.Swap(true) {
				ss.srv.log.Warn("JetStream did not answer the store check", "store", st.name, "err", err)
			}
			return
		}
		st.mu.Lock()
		same := err == nil && info.CachedInfo().Created.Equal(st.created)
		st.mu.Unlock()
		if same && !st.suspect.Load() {
			st.missing.Store(false)
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, storeHealTimeout)
		if err := ss.healStore(hctx, st); err != nil && ctx.Err() == nil {
			ss.srv.log.Warn("store not healed", "store", st.name, "err", err)
		}
		cancel()
	}
	if !only && ss.jsDown.Swap(false) {
		ss.srv.log.Info("JetStream answers the store check again")
	}
	ss.srv.metrics.storesMissing.Set(float64(len(ss.missing())))
}

// missing lists the stores found missing and not yet created again.
func (ss *storeSet) missing() []string {
	var out []string
	for _, st := range ss.all() {
		if st.missing.Load() {
			out = append(out, st.name)
		}
	}
	return out
}

// Health is the node's readiness, as /readyz reports it.
type Health struct {
	// Serving: started, and not shutting down.
	Serving bool
	// Connected to NATS.
	Connected bool
	// JetStream answered the last check of the stores, and
	// Config.JetStreamCheck, if any, passes.
	JetStream bool
	// Missing names the buckets and streams found missing and not yet
	// created again.
	Missing []string
}

// Ready reports whether the node can serve everything: serving, connected,
// JetStream answering, and no store missing.
func (h Health) Ready() bool {
	return h.Serving && h.Connected && h.JetStream && len(h.Missing) == 0
}

// Health reports the node's readiness. The stores are checked every
// StoreCheckInterval (and at once when an operation finds one gone), so a
// change shows within that interval plus storeCallTimeout.
func (s *Server) Health() Health {
	h := Health{
		Serving:   s.started.Load() && !s.stopping.Load(),
		Connected: s.nc.IsConnected(),
		JetStream: !s.stores.jsDown.Load() && (s.cfg.JetStreamCheck == nil || s.cfg.JetStreamCheck() == nil),
	}
	h.Missing = s.stores.missing()
	return h
}
