package presence

import (
	"context"
	"sync"
)

// step is one attempt at a piece of presence work. It reports done when
// nothing is left to do; not done with a nil error means that what it read
// changed under it, and it should run again at once.
type step func(ctx context.Context) (done bool, err error)

// retry runs steps until each is done, or the tracker stops. Each pass gives
// every step still pending one attempt (so that one device whose writes
// fail does not hold the others up), up to retryParallel of them side by
// side, then backs off, doubling from presence.RetryFirst to RetryMax. op names the
// work in metrics and logs.
func (tr *Tracker) retry(op string, steps ...step) {
	runCtx := tr.runCtx
	pending := steps
	for failures := 0; len(pending) > 0; {
		failed, lastErr := tr.pass(runCtx, pending)
		pending = failed
		if len(pending) == 0 {
			if failures > 0 {
				tr.log.Info("presence work done after retries", "op", op, "retries", failures)
			}
			return
		}
		failures++
		tr.metrics.Retried(op, len(pending))
		if tr.warnLog.Allow() {
			tr.log.Warn("presence work failed, trying again", "op", op, "pending", len(pending), "err", lastErr)
		}
		if !Backoff(runCtx, failures) {
			tr.metrics.Abandoned(op, len(pending))
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
func (tr *Tracker) pass(runCtx context.Context, steps []step) ([]step, error) {
	if len(steps) == 1 {
		if err := tr.attempt(runCtx, steps[0]); err != nil {
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
				errs[i] = tr.attempt(runCtx, steps[i])
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
func (tr *Tracker) attempt(runCtx context.Context, st step) error {
	for quick := 0; ; quick++ {
		if err := runCtx.Err(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(runCtx, CallTimeout)
		done, err := st(ctx)
		cancel()
		switch {
		case done:
			return nil
		case err != nil:
			return err
		case quick >= QuickRetries:
			return ErrContended
		}
	}
}

// lockDevice takes sn's lock, waiting at most until ctx ends, and returns
// its release. Lock order: a device's lock, then Tracker.mu.
func (tr *Tracker) lockDevice(ctx context.Context, sn string) (func(), error) {
	return tr.locks.Lock(ctx, sn)
}

// forDevice makes f a step that runs holding sn's device lock.
func (tr *Tracker) forDevice(sn string, f step) step {
	return func(ctx context.Context) (bool, error) {
		unlock, err := tr.lockDevice(ctx, sn)
		if err != nil {
			return false, err
		}
		defer unlock()
		return f(ctx)
	}
}

// then makes a step that runs first until done, then second: each attempt
// runs what is left.
func (tr *Tracker) then(first, second step) step {
	firstDone := false
	return func(ctx context.Context) (bool, error) {
		if !firstDone {
			done, err := first(ctx)
			if !done {
				return false, err
			}
			firstDone = true
		}
		return second(ctx)
	}
}
