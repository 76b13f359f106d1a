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

// authQueueWait bounds how long an auth request waits for a worker (the
// auth timeout is held meanwhile, as for a login waiting for bcrypt).
const authQueueWait = 30 * time.Second

// authPool serves device and token auth requests on a fixed set of
// goroutines. Besides bounding them, it keeps the deep part of an auth
// (argument decoding, the JetStream calls) off the session's read
// goroutine: thousands of those, each growing its stack for one auth and
// shrunk again by the next GC, cost a connect storm more CPU (stack
// copies) than the few hundred workers whose stacks stay grown.
type authPool struct {
	jobs chan *authJob // unbuffered: a job is taken by a worker, or not at all
}

type authJob struct {
	run  func()
	done chan struct{}
}

func newAuthPool() authPool { return authPool{jobs: make(chan *authJob)} }

// start runs the workers until runCtx ends, on goroutines srv's shutdown
// waits for.
func (p *authPool) start(srv *Server, runCtx context.Context) {
	for range authWorkers {
		srv.goTask(func() {
			for {
				select {
				case <-runCtx.Done():
					return
				case j := <-p.jobs:
					j.run()
					close(j.done)
				}
			}
		})
	}
}

// do runs f on a worker and returns once it has, or reports false, not
// running f, when no worker took it within wait, or before ctx ended.
func (p *authPool) do(ctx context.Context, wait time.Duration, f func()) bool {
	j := &authJob{run: f, done: make(chan struct{})}
	select {
	case p.jobs <- j:
		// A worker was free, as it mostly is: no timer to set (a connect
		// storm sends every device through here).
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case p.jobs <- j:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	<-j.done
	return true
}
