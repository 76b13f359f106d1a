// Package jscreate creates the buckets and streams a node needs in a way
// that survives a JetStream that is still forming: a fresh cluster electing
// its meta leader, a server that has not joined yet, several nodes
// creating the same stores at the same moment.
//
// Found on nats-server 2.15.2: a JetStream API request sent before the
// meta leader is elected gets no answer at all (not an error: nothing), so
// a call that waits for it with one long deadline waits out the whole
// deadline although JetStream is ready a second later; and when several
// clients create the same replicated stream at once, all but one of the
// creates may go unanswered the same way. Each call therefore has its own
// short timeout (FirstCallTimeout, growing to CallTimeout) and is tried
// again, after a jittered back-off, while the error is one a forming
// JetStream gives (Transient). Trying a create again is safe: it is a
// no-op once the first one has taken effect.
//
//	kv, err := jscreate.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "hub_users", Replicas: 3})
//
// Creation is create-then-update: a create, which JetStream takes as a
// no-op when the store exists with the same config; an update only when
// the store exists with another one (an upgraded node, changed flags).
package jscreate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// FirstCallTimeout bounds the first try of a call; each try after it
	// gets twice as long, up to CallTimeout. A request lost while the
	// meta leader is elected then costs a second, and a call that is
	// merely slow (a replicated stream created under load) still gets
	// its CallTimeout.
	FirstCallTimeout = time.Second
	// CallTimeout bounds one JetStream API call of a creation.
	CallTimeout = 5 * time.Second
	// RetryFor bounds the tries of one creation or look-up: past it the
	// last error is returned, and the caller (the node's start, tried
	// again as a whole) logs it.
	RetryFor = 30 * time.Second
	// MinBackoff and MaxBackoff bound the wait between two tries.
	MinBackoff = 250 * time.Millisecond
	MaxBackoff = 5 * time.Second
)

// KeyValue creates bucket cfg.Bucket, or updates it when it exists with
// another config, and returns it; it tries again on transient errors until
// ctx ends.
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return Ensure(ctx,
		func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateKeyValue(ctx, cfg) },
		func(ctx context.Context) (jetstream.KeyValue, error) { return js.UpdateKeyValue(ctx, cfg) })
}

// Stream creates stream cfg.Name, or updates it when it exists with
// another config, and returns it; it tries again on transient errors until
// ctx ends.
func Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return Ensure(ctx,
		func(ctx context.Context) (jetstream.Stream, error) { return js.CreateStream(ctx, cfg) },
		func(ctx context.Context) (jetstream.Stream, error) { return js.UpdateStream(ctx, cfg) })
}

// Ensure runs create, then update when create finds the store existing
// with another config, each with its own timeout (FirstCallTimeout,
// doubling at each try up to CallTimeout). A transient error has the pair
// tried again after a jittered exponential back-off, until ctx ends or
// RetryFor has passed; any other error is returned at once. So is the
// last error when ctx ends, wrapped with ctx's.
func Ensure[T any](ctx context.Context, create, update func(context.Context) (T, error)) (T, error) {
	var b Backoff
	giveUp := time.Now().Add(RetryFor)
	for try := 0; ; try++ {
		v, err := call(ctx, try, create)
		if exists(err) {
			v, err = call(ctx, try, update)
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
				err = errRaced // deleted between the create and the update: create again
			}
		}
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return v, fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		}
		if err != errRaced && !Transient(err) {
			return v, err
		}
		if time.Now().After(giveUp) {
			return v, fmt.Errorf("jscreate: still failing after %v: %w", RetryFor, err)
		}
		if serr := Sleep(ctx, b.Next()); serr != nil {
			return v, fmt.Errorf("%w (last try: %w)", serr, err)
		}
	}
}

// Retry runs f with its own timeout (as Ensure's), again after a
// jittered back-off while it fails with a transient error, until ctx ends
// or RetryFor has passed: for the look-ups that follow a creation.
func Retry[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	return retry(ctx, CallTimeout, MaxBackoff, f)
}

// Wait is Retry for a cheap question asked while waiting for JetStream to
// answer at all (the account's info): each try gets at most
// WaitCallTimeout and the back-off stays under WaitBackoff, so that the
// answer is seen within a few seconds of JetStream's return.
func Wait[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	return retry(ctx, WaitCallTimeout, WaitBackoff, f)
}

// Bounds of Wait.
const (
	WaitCallTimeout = 2 * time.Second
	WaitBackoff     = time.Second
)

func retry[T any](ctx context.Context, maxCall, maxBackoff time.Duration, f func(context.Context) (T, error)) (T, error) {
	b := Backoff{Max: maxBackoff}
	giveUp := time.Now().Add(RetryFor)
	for try := 0; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, min(maxCall, FirstCallTimeout<<min(try, 8)))
		v, err := f(cctx)
		cancel()
		if err == nil || !Transient(err) {
			return v, err
		}
		if ctx.Err() != nil {
			return v, fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		}
		if time.Now().After(giveUp) {
			return v, fmt.Errorf("jscreate: still failing after %v: %w", RetryFor, err)
		}
		if serr := Sleep(ctx, b.Next()); serr != nil {
			return v, fmt.Errorf("%w (last try: %w)", serr, err)
		}
	}
}

// errRaced is a store deleted between its create and its update.
var errRaced = errors.New("jscreate: store deleted while being updated")

// call runs f under the timeout of try (0 for the first).
func call[T any](ctx context.Context, try int, f func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, min(CallTimeout, FirstCallTimeout<<min(try, 8)))
	defer cancel()
	return f(cctx)
}

// exists reports whether a create found the store existing with another
// config.
func exists(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrBucketExists)
}

// Transient reports whether err is one JetStream gives while it forms or
// fails over, so that the same call may succeed later: no answer within
// the call's timeout, no responder (JetStream not up on the server yet),
// a connection that is reconnecting, "JetStream system temporarily
// unavailable", no peers for placement yet, and other 503 answers.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.ErrorCode == codeClusterNotAvail, apiErr.ErrorCode == codeClusterNoPeers:
			return true
		case apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return false // a configuration, not a moment
		case apiErr.Code == 503:
			return true
		}
	}
	return false
}

// JetStream API error codes of a cluster that is forming (nats-server's
// JSClusterNotAvailErr and JSClusterNoPeersErrF).
const (
	codeClusterNotAvail jetstream.ErrorCode = 10008
	codeClusterNoPeers  jetstream.ErrorCode = 10005
)

// Backoff is a jittered exponential back-off from MinBackoff to
// MaxBackoff. The zero value is ready to use; it is not safe for
// concurrent use.
type Backoff struct {
	Min, Max time.Duration // zero: MinBackoff, MaxBackoff
	next     time.Duration
}

// Next returns the next wait: the current step doubled each time, up to
// Max, with "equal jitter" (half the step plus a random part of the other
// half), so that nodes started together spread their tries.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = MinBackoff
	}
	if hi <= 0 {
		hi = MaxBackoff
	}
	if b.next < lo {
		b.next = lo
	}
	step := b.next
	b.next = min(2*b.next, hi)
	return step/2 + rand.N(step/2+1)
}

// Reset starts the back-off again from Min.
func (b *Backoff) Reset() { b.next = 0 }

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
