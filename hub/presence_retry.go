package hub

import (
	"context"
	"errors"
	"sync"

	pres "github.com/fleethub/fleethub/hub/presence"
)

// Presence work against JetStream is done in steps (see hub/presence):
// each attempt has its own timeout, off the run context.
const (
	presenceCallTimeout = pres.CallTimeout
	quickRetries        = pres.QuickRetries
)

// step is one attempt at a piece of presence work. It reports done when
// nothing is left to do; not done with a nil error means that what it read
// changed under it, and it should run again at once.
type step func(ctx context.Context) (done bool, err error)

// retry runs steps until each is done, or the hub stops. Each pass gives
// every step still pending one attempt (so that one device whose writes
// fail does not hold the others up), up to retryParallel of them side by
// side, then backs off, doubling from presence.RetryFirst to RetryMax. op names the
// work in metrics and logs.
func (p *presence) retry(op string, steps ...step) {
	runCtx := p.srv.runCtx
	pending := steps
	for failures := 0; len(pending) > 0; {
		failed, lastErr := p.pass(runCtx, pending)
		pending = failed
		if len(pending) == 0 {
			if failures > 0 {
				p.srv.log.Info("presence work done after retries", "op", op, "retries", failures)
			}
			return
		}
		failures++
		p.srv.metrics.presenceRetries.WithLabelValues(op).Add(float64(len(pending)))
		if p.warnLog.Allow() {
			p.srv.log.Warn("presence work failed, trying again", "op", op, "pending", len(pending), "err", lastErr)
		}
		if !sleepBackoff(runCtx, failures) {
			p.srv.metrics.presenceAbandoned.WithLabelValues(op).Add(float64(len(pending)))
			return
		}
	}
}

// retryParallel bounds the steps of one retry attempted at once: the
// devices of a lost node are reported in pipelined calls, not one round
// trip after the other.
const retryParallel = 64

// pass attempts each step once, up to retryParallel at a time, on
// goroutines it waits for, and returns those that failed (in their order)
// with the last error.
func (p *presence) pass(runCtx context.Context, steps []step) ([]step, error) {
	if len(steps) == 1 {
		if err := p.attempt(runCtx, steps[0]); err != nil {
			return steps, err
		}
		return nil, nil
	}
	errs := make([]error, len(steps))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(retryParallel, len(steps)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = p.attempt(runCtx, steps[i])
			}
		}()
	}
	for i := range steps {
		next <- i
	}
	close(next)
	wg.Wait()
	var failed []step
	var lastErr error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, steps[i])
			lastErr = err
		}
	}
	return failed, lastErr
}

// attempt runs st with a fresh timeout, again at once while it reports
// that what it read changed under it (a few times).
func (p *presence) attempt(runCtx context.Context, st step) error {
	for quick := 0; ; quick++ {
		if err := runCtx.Err(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(runCtx, presenceCallTimeout)
		done, err := st(ctx)
		cancel()
		switch {
		case done:
			return nil
		case err != nil:
			return err
		case quick >= quickRetries:
			return errPresenceContended
		}
	}
}

var errPresenceContended = errors.New("hub: presence entry or record keeps changing")

// sleepBackoff waits before attempt n (see presence.Backoff).
func sleepBackoff(ctx context.Context, n int) bool { return pres.Backoff(ctx, n) }

// isWrongLastSeq reports whether err is JetStream refusing a write for
// its expected last sequence (see presence.IsWrongLastSeq).
func isWrongLastSeq(err error) bool { return pres.IsWrongLastSeq(err) }

// lockDevice takes sn's lock, waiting at most until ctx ends, and returns
// its release. Lock order: a device's lock, then presence.mu.
func (p *presence) lockDevice(ctx context.Context, sn string) (func(), error) {
	return p.locks.Lock(ctx, sn)
}
