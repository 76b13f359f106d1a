package dcs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/nats-io/nats.go/jetstream"
)

// Upkeep of the views. Each view must source every known data centre; a
// source is never removed because a data centre is absent (a partition
// must not lose its state). When a data centre comes back after being
// absent, its source on every view is dropped and added back: the server
// retries a source whose consumer create was lost in the cut only after
// up to 30 s plus a back-off of 10 s per failure (up to 2 min), and a new
// source starts at once from the last sequence the view holds from it (no
// duplicate). Measured in docs/multidc-notes.md (c, f) and by this
// package's tests.
//
// Adding sources is idempotent, so every node does it; kicks (drop and
// add back) are not, so only one node per data centre kicks: the one with
// the smallest node id among the nodes of its data centre heard within
// AbsentAfter intervals, and only once it has listened that long itself
// (a node that has just started does not know the others yet).

// upkeepLoop runs the work the announces and the periodic check ask for,
// and tries again after a back-off what failed.
func (e *Engine) upkeepLoop() {
	recheck := time.NewTicker(e.cfg.Recheck)
	defer recheck.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var b jscreate.Backoff
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.wake:
		case <-retry.C:
		case <-recheck.C:
			e.mu.Lock()
			e.ensure, e.checkHealth = true, true
			e.mu.Unlock()
		}
		failed, wait := e.upkeep(e.ctx)
		switch {
		case failed:
			retry.Reset(b.Next())
		case wait > 0:
			b.Reset()
			retry.Reset(wait)
		default:
			b.Reset()
		}
	}
}

// upkeep does the pending work. It reports whether some of it failed (it
// is pending again), or how long kicks wait for this node to have
// listened long enough to know whether it is the one that kicks.
func (e *Engine) upkeep(ctx context.Context) (failed bool, wait time.Duration) {
	now := time.Now()
	e.mu.Lock()
	ensure, check := e.ensure, e.checkHealth
	e.ensure, e.checkHealth = false, false
	kicks := e.kicks
	settle := e.absent - now.Sub(e.started)
	if settle > 0 && (len(kicks) > 0 || check) {
		// Keep them for later; ensure now.
		e.checkHealth = check
		kicks, check, wait = nil, false, settle
	} else {
		e.kicks = map[string]bool{}
	}
	kicker := e.kickerLocked(now)
	e.mu.Unlock()
	if !kicker {
		kicks, check = nil, false
	}
	if e.cfg.noReturnKick {
		kicks = nil
	}
	if e.cfg.noHealthKick {
		check = false
	}

	if ensure {
		if err := e.ensureViews(ctx, false); err != nil {
			e.viewError(opEnsure, "", err)
			e.mu.Lock()
			e.ensure = true
			e.mu.Unlock()
			failed = true
		}
	}
	if check {
		bad, err := e.unhealthySources(ctx)
		if err != nil {
			e.viewError(opCheck, "", err)
			e.mu.Lock()
			e.checkHealth = true
			e.mu.Unlock()
			failed = true
		}
		for _, dc := range bad {
			if kicks == nil {
				kicks = map[string]bool{}
			}
			kicks[dc] = true
		}
	}
	for _, dc := range slices.Sorted(maps.Keys(kicks)) {
		t0 := time.Now()
		if err := e.kick(ctx, dc); err != nil {
			e.viewError(opKick, dc, err)
			e.mu.Lock()
			e.kicks[dc] = true
			e.mu.Unlock()
			failed = true
			continue
		}
		e.m.kicks.WithLabelValues(dc).Inc()
		e.log.Info("data centre sources added back", "other", dc, "views", len(e.cfg.Views), "took", time.Since(t0).Round(time.Millisecond))
	}
	return failed, wait
}

// viewError counts and logs a failed upkeep step.
func (e *Engine) viewError(op, dc string, err error) {
	if e.ctx.Err() != nil {
		return // stopping
	}
	e.m.viewErrors.WithLabelValues(op).Inc()
	e.warnViews.Do(func() {
		e.log.Warn("data centre views: upkeep failed, trying again", "op", op, "other", dc, "err", err)
	})
}

// kickerLocked reports whether this node is the one of its data centre
// that kicks sources: no node with a smaller id heard recently.
func (e *Engine) kickerLocked(now time.Time) bool {
	for n, at := range e.nodes {
		if n < e.cfg.Node && now.Sub(at) <= e.absent {
			return false
		}
	}
	return true
}

// known returns the known data centres' domains by name.
func (e *Engine) known() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.dcs))
	for name, st := range e.dcs {
		out[name] = st.domain
	}
	return out
}

// sourceDomain is the domain to name in a source of a data centre whose
// JetStream domain is domain: "" when it is this node's JetStream.
func (e *Engine) sourceDomain(domain string) string {
	if domain == e.cfg.Domain {
		return ""
	}
	return domain
}

// sources are v's sources for the data centres of known.
func (e *Engine) sources(v View, known map[string]string) []*jetstream.StreamSource {
	var out []*jetstream.StreamSource
	for _, name := range slices.Sorted(maps.Keys(known)) {
		if v.OthersOnly && name == e.cfg.DC {
			continue
		}
		out = append(out, v.Source(name, e.sourceDomain(known[name])))
	}
	return out
}

// ensureViews creates or updates every view so that its sources include
// every known data centre's. At start (all) every view is created or
// updated to its config; afterwards a view whose sources already cover
// the known data centres is left alone, so that the periodic check costs
// one stream info per view (in a supercluster an update is a call to the
// meta leader).
func (e *Engine) ensureViews(ctx context.Context, all bool) error {
	known := e.known()
	var errs []error
	for _, v := range e.cfg.Views {
		cfg := v.Config
		cfg.Sources = e.sources(v, known)
		if !all {
			st, err := jscreate.Retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return e.cfg.JS.Stream(ctx, cfg.Name) })
			if err == nil && covers(st.CachedInfo().Config.Sources, cfg.Sources) {
				continue
			}
		}
		if _, err := jscreate.WithSources(ctx, e.cfg.JS, cfg); err != nil {
			errs = append(errs, fmt.Errorf("dcs: view %s: %w", cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// covers reports whether have holds each source of want, with the same
// transforms and filter.
func covers(have, want []*jetstream.StreamSource) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h *jetstream.StreamSource) bool {
			return jscreate.SameSource(h, w) && h.FilterSubject == w.FilterSubject && slices.Equal(h.SubjectTransforms, w.SubjectTransforms)
		}) {
			return false
		}
	}
	return true
}

// kick drops dc's source from every view that has it, then adds every
// known data centre's source back.
func (e *Engine) kick(ctx context.Context, dc string) error {
	known := e.known()
	domain, ok := known[dc]
	if !ok {
		return nil
	}
	// The views at once, not one after another: in a supercluster each
	// call goes to the meta leader, which a heal has just brought back,
	// and the listings wait for the last view.
	errs := make([]error, len(e.cfg.Views))
	var wg sync.WaitGroup
	for i, v := range e.cfg.Views {
		if v.OthersOnly && dc == e.cfg.DC {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.kickView(ctx, v, v.Source(dc, e.sourceDomain(domain)), known); err != nil {
				errs[i] = fmt.Errorf("dcs: view %s, source of %s: %w", v.Config.Name, dc, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// kickView is one view's kick: one update without src, one with it
// (and with every other known data centre's source), three JetStream
// calls in all. In a supercluster each needs the meta leader, which a
// heal has just brought back (an election): the calls are tried as
// jscreate.Wait does, each at most 2 s and again within a second, so the
// kick follows the leader's return closely; the calls are small and
// trying them again is harmless.
func (e *Engine) kickView(ctx context.Context, v View, src *jetstream.StreamSource, known map[string]string) error {
	st, err := jscreate.Wait(ctx, func(ctx context.Context) (jetstream.Stream, error) { return e.cfg.JS.Stream(ctx, v.Config.Name) })
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		cfg := v.Config
		cfg.Sources = e.sources(v, known)
		_, err = jscreate.WithSources(ctx, e.cfg.JS, cfg)
		return err
	}
	if err != nil {
		return err
	}
	have := st.CachedInfo().Config.Sources
	without := slices.DeleteFunc(slices.Clone(have), func(s *jetstream.StreamSource) bool { return jscreate.SameSource(s, src) })
	if len(without) < len(have) {
		cfg := v.Config
		cfg.Sources = without
		if st, err = jscreate.Wait(ctx, func(ctx context.Context) (jetstream.Stream, error) { return e.cfg.JS.UpdateStream(ctx, cfg) }); err != nil {
			return err
		}
	}
	// Back with the sources as the update left them (another node's
	// included) and every known one.
	cfg := v.Config
	cfg.Sources = jscreate.MergeSources(st.CachedInfo().Config.Sources, e.sources(v, known))
	_, err = jscreate.Wait(ctx, func(ctx context.Context) (jetstream.Stream, error) { return e.cfg.JS.UpdateStream(ctx, cfg) })
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = jscreate.WithSources(ctx, e.cfg.JS, cfg)
	}
	return err
}

// staleSource is how long a source may go without a message or a
// heartbeat (the server's source consumers send one every second) before
// it counts as stalled: the server's own threshold (stream.go
// sourceHealthCheckInterval).
const staleSource = 10 * time.Second

// unhealthySources returns the present data centres (other than this one)
// whose source on some view reports an error or has been silent longer
// than staleSource.
func (e *Engine) unhealthySources(ctx context.Context) ([]string, error) {
	var bad []string
	var errs []error
	for _, v := range e.cfg.Views {
		st, err := jscreate.Retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return e.cfg.JS.Stream(ctx, v.Config.Name) })
		if err != nil {
			errs = append(errs, fmt.Errorf("dcs: view %s: %w", v.Config.Name, err))
			continue
		}
		for _, si := range st.CachedInfo().Sources {
			if si.Error == nil && si.Active <= staleSource {
				continue
			}
			dc, ok := v.dcOf(si.Name)
			if ok && dc != e.cfg.DC && e.isPresent(dc) && !slices.Contains(bad, dc) {
				bad = append(bad, dc)
			}
		}
	}
	return bad, errors.Join(errs...)
}

func (e *Engine) isPresent(dc string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.dcs[dc]
	return st != nil && st.present
}

// learnFromViews adds to the known data centres those the views already
// source (known, absent until heard).
func (e *Engine) learnFromViews(ctx context.Context) error {
	now := time.Now()
	for _, v := range e.cfg.Views {
		st, err := jscreate.Retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return e.cfg.JS.Stream(ctx, v.Config.Name) })
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("dcs: view %s: %w", v.Config.Name, err)
		}
		for _, s := range st.CachedInfo().Config.Sources {
			dc, ok := v.dcOf(s.Name)
			if !ok {
				continue
			}
			domain := sourceDomainOf(s)
			if domain == "" {
				domain = e.cfg.Domain
			}
			e.mu.Lock()
			if _, have := e.dcs[dc]; !have && len(e.dcs) < MaxDCs {
				e.dcs[dc] = &dcState{domain: domain, since: now}
			}
			e.mu.Unlock()
		}
	}
	return nil
}

// sourceDomainOf is the JetStream domain a source reaches its stream in,
// "" for this node's JetStream.
func sourceDomainOf(s *jetstream.StreamSource) string {
	if s.Domain != "" {
		return s.Domain
	}
	if s.External != nil {
		if d, ok := strings.CutPrefix(s.External.APIPrefix, "$JS."); ok {
			if d, ok := strings.CutSuffix(d, ".API"); ok {
				return d
			}
		}
	}
	return ""
}
