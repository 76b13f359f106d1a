package hub

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Presence work against JetStream is done in steps: a step reads what is
// stored and does the next write that is due, so that a step that failed,
// or whose write timed out (it may have taken effect all the same), is
// simply run again. Each attempt has its own timeout, off the run context.
const (
	// presenceCallTimeout bounds one attempt of a step (a few KV and
	// stream calls), and the presence calls of Shutdown.
	presenceCallTimeout = 5 * time.Second
	// retryFirst and retryMax bound the back-off between attempts.
	retryFirst = 100 * time.Millisecond
	retryMax   = 5 * time.Second
	// quickRetries is how many times in a row a step that found the state
	// changed under it is run again at once, before it backs off.
	quickRetries = 3
)

// step is one attempt at a piece of presence work. It reports done when
// nothing is left to do; not done with a nil error means that what it read
// changed under it, and it should run again at once.
type step func(ctx context.Context) (done bool, err error)

// retry runs steps until each is done, or the hub stops. Each pass gives
// every step still pending one attempt (so that one device whose writes
// fail does not hold the others up), up to retryParallel of them side by
// side, then backs off, doubling from retryFirst to retryMax. op names the
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

// sleepBackoff waits before attempt n (from 1) of a failing operation:
// retryFirst doubling up to retryMax, less up to a fifth at random so
// that many failures do not retry in step. It reports false if ctx ended.
func sleepBackoff(ctx context.Context, n int) bool {
	d := retryMax
	if n < 8 {
		d = min(retryFirst<<(n-1), retryMax)
	}
	d -= time.Duration(rand.Int64N(int64(d)/5 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// deviceLocks serialises the presence work of each device on this node:
// connect, expiry, repair and rewrites of one device never interleave
// their reads and writes. Lock order: a device's lock, then presence.mu;
// deviceLocks.mu is taken alone.
type deviceLocks struct {
	mu sync.Mutex
	m  map[string]*deviceLock // by sn, while held or waited for. Guarded by mu.
}

type deviceLock struct {
	ch   chan struct{} // holds a token while the lock is held
	refs int           // holders and waiters. Guarded by deviceLocks.mu.
}

// lockDevice takes sn's lock, waiting at most until ctx ends, and returns
// its release.
func (p *presence) lockDevice(ctx context.Context, sn string) (func(), error) {
	l := &p.locks
	l.mu.Lock()
	dl := l.m[sn]
	if dl == nil {
		dl = &deviceLock{ch: make(chan struct{}, 1)}
		l.m[sn] = dl
	}
	dl.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if dl.refs--; dl.refs == 0 {
			delete(l.m, sn)
		}
		l.mu.Unlock()
	}
	select {
	case dl.ch <- struct{}{}:
		return func() {
			<-dl.ch
			release()
		}, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// isWrongLastSeq reports whether err is JetStream refusing a write whose
// expected last sequence (a KV revision, or a subject's last record) is
// not the stream's. Replicated streams say so with another code.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
