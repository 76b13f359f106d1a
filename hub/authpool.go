package hub

import (
	"context"
	"time"
)

// authWorkers is how many auth requests a node serves at once. Their
// cost is round trips to JetStream (the nonce claim, the presence
// writes), so a few hundred keep even a remote JetStream busy; more
// would only make each wait longer. In a reconnect storm (every device
// of a node back at once) the rest queue, in order, instead of all of
// them waiting at once on a JetStream they slow down, each past its
// authRequestTimeout, to be answered 503 and come back.
const authWorkers = 256

// authQueueWait bounds how long an auth request waits for a slot (the
// auth timeout is held meanwhile, as for a login waiting for bcrypt).
const authQueueWait = 30 * time.Second

// authPool bounds the device and token auth requests served at once. An
// auth runs on the goroutine that asks (a frame worker of the node, which
// keeps the deep part of an auth off the session's read goroutine, see
// node/frames.go), once it has one of authWorkers slots: no hand-over to
// another goroutine and back, two goroutine switches per connect fewer. In
// a storm the rest wait for a slot, in order (a full channel's senders are
// served first come, first served).
type authPool struct {
	slots chan struct{} // one per auth being served
}

func newAuthPool() authPool { return authPool{slots: make(chan struct{}, authWorkers)} }

// do runs f once a slot is free and returns when it has, or reports false,
// not running f, when no slot came free within wait, or before ctx ended.
func (p *authPool) do(ctx context.Context, wait time.Duration, f func()) bool {
	select {
	case p.slots <- struct{}{}:
		// A slot was free, as it mostly is: no timer to set (a connect
		// storm sends every device through here).
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case p.slots <- struct{}{}:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	defer func() { <-p.slots }()
	f()
	return true
}
