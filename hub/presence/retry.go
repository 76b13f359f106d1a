package presence

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
// simply run again.
const (
	// CallTimeout bounds one attempt of a step (a few KV and stream
	// calls), and the presence calls of a shutdown.
	CallTimeout = 5 * time.Second
	// RetryFirst and RetryMax bound the back-off between attempts.
	RetryFirst = 100 * time.Millisecond
	RetryMax   = 5 * time.Second
	// QuickRetries is how many times in a row a step that found the state
	// changed under it is run again at once, before it backs off.
	QuickRetries = 3
)

// Backoff waits before attempt n (from 1) of a failing operation:
// RetryFirst doubling up to RetryMax, less up to a fifth at random so
// that many failures do not retry in step. It reports false if ctx ended.
func Backoff(ctx context.Context, n int) bool {
	d := RetryMax
	if n < 8 {
		d = min(RetryFirst<<(n-1), RetryMax)
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

// IsWrongLastSeq reports whether err is JetStream refusing a write whose
// expected last sequence (a KV revision, or a subject's last record) is
// not the stream's. Replicated streams say so with another code.
func IsWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Locks serialises the work of each device on a node: connect, expiry,
// repair and rewrites of one device never interleave their reads and
// writes. Locks.mu is taken alone; a device's lock may be held while
// taking the tracker's own mutex, never the other way round. The zero
// Locks is ready.
type Locks struct {
	mu sync.Mutex
	m  map[string]*deviceLock // by key, while held or waited for. Guarded by mu.
}

type deviceLock struct {
	ch   chan struct{} // holds a token while the lock is held
	refs int           // holders and waiters. Guarded by Locks.mu.
}

// Lock takes key's lock, waiting at most until ctx ends, and returns its
// release.
func (l *Locks) Lock(ctx context.Context, key string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*deviceLock)
	}
	dl := l.m[key]
	if dl == nil {
		dl = &deviceLock{ch: make(chan struct{}, 1)}
		l.m[key] = dl
	}
	dl.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if dl.refs--; dl.refs == 0 {
			delete(l.m, key)
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
