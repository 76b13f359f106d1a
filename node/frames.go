package node

import (
	"context"
	"sync"
	"sync/atomic"
)

// frameWorkers handles received frames on a few long-lived goroutines
// instead of melody's read goroutines.
//
// A session's read goroutine lives as long as its connection, and Go
// shrinks a parked goroutine's stack only while it uses less than a
// quarter of it. Handling a frame (an auth request above all: JSON,
// signature check, JetStream round trips) grows a stack to 8 KiB or more,
// while the read loop parked in its next read needs about 1.5 KiB: handled
// on the read goroutine, the grown stack would stay with every idle
// connection for life. Handled here, the read goroutine keeps a 4 KiB
// stack, and the workers' stacks, grown once, are not grown (copied) again
// on every connect.
//
// Order and back-pressure are unchanged: the read goroutine hands one frame
// over and waits until it has been handled before it reads the next, so a
// session's frames are still handled one at a time, in order, and a session
// the hub sheds (rate limit) still stops reading. Handling is thus owned
// by whichever goroutine holds the frame, one at a time per session.
//
// A frame goes to an idle worker when there is one, else to a new worker;
// a worker that finds maxIdleFrameWorkers others idle exits. After stop,
// frames are handled on the read goroutine itself.
type frameWorkers struct {
	jobs chan *frameJob // unbuffered: a send succeeds only when a worker waits
	idle atomic.Int32   // workers waiting on jobs, about
	quit chan struct{}  // closed by stop

	mu      sync.Mutex
	stopped bool // Guarded by mu.
	wg      sync.WaitGroup
}

// maxIdleFrameWorkers bounds the workers kept waiting between bursts: as
// many as a connect storm's concurrent auth requests usually need, a few
// hundred KiB of stacks at most.
const maxIdleFrameWorkers = 64

func newFrameWorkers() *frameWorkers {
	return &frameWorkers{jobs: make(chan *frameJob), quit: make(chan struct{})}
}

// frameJob is one frame to handle. Jobs are pooled with their done channel,
// so that a frame costs no allocation here.
type frameJob struct {
	c      *wsConn
	msg    []byte
	binary bool
	done   chan struct{} // buffered 1: the worker never waits on it
}

var framePool = sync.Pool{New: func() any { return &frameJob{done: make(chan struct{}, 1)} }}

func (j *frameJob) handle() {
	if j.binary {
		j.c.hs.HandleBinary()
	} else {
		j.c.hs.HandleFrame(j.msg)
	}
}

// handle handles one frame of c and returns once it has been handled. It
// is called by c's read goroutine only.
func (w *frameWorkers) handle(c *wsConn, msg []byte, binary bool) {
	j := framePool.Get().(*frameJob)
	j.c, j.msg, j.binary = c, msg, binary
	select {
	case w.jobs <- j:
		<-j.done
	default:
		if w.spawn(j) {
			<-j.done
		} else {
			j.handle()
		}
	}
	j.c, j.msg = nil, nil
	framePool.Put(j)
}

// spawn starts a worker with j as its first job, unless stop was called.
func (w *frameWorkers) spawn(j *frameJob) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	w.wg.Add(1)
	go w.work(j)
	return true
}

// work handles j, then the jobs handed to it while it waits, until stop
// or until enough other workers wait.
func (w *frameWorkers) work(j *frameJob) {
	defer w.wg.Done()
	for {
		j.handle()
		j.done <- struct{}{} // j is the read goroutine's again from here
		if w.idle.Add(1) > maxIdleFrameWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case j = <-w.jobs:
			w.idle.Add(-1)
		case <-w.quit:
			w.idle.Add(-1)
			return
		}
	}
}

// stop ends the workers once their frames are handled and waits for them
// until ctx ends. It is called once, after the sessions have ended.
func (w *frameWorkers) stop(ctx context.Context) error {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.quit)
	return waitGroup(ctx, &w.wg)
}

// waitGroup waits for wg until ctx ends. (If ctx ends first, the goroutine
// that waits ends with the last of wg's.)
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
