package node

import (
	"sync"
	"time"
)

// pinger pings every session once per PingInterval, from one goroutine for
// the whole node, through the session's own writer (wsConn.ping): a ping
// to an idle session is one non-blocking write on the pinger's goroutine,
// and one to a busy session waits its turn between two frames. melody's
// writer goroutine then never writes until the close, and keeps the
// smallest stack (its own ticker is set out of the way, New).
//
// The sessions are spread over a wheel of buckets, one bucket pinged per
// tick, so that pings are spread over the interval rather than all sent
// in the same millisecond. Sessions join the buckets in turn, so that even
// devices that all connected at once (a reconnect storm) are pinged
// evenly over the interval; a session's first ping thus comes within one
// interval of its connect. Each tick visits only the sessions it pings.
//
// Pongs are not the pinger's: the read pump extends the read deadline on
// a pong (melody) or on any message (wsConn.alive), and a session whose
// deadline passes ends as timed out, as before.
type pinger struct {
	tick time.Duration

	mu      sync.Mutex
	buckets [][]*wsConn // Guarded by mu.
	next    int         // the bucket the next tick pings. Guarded by mu.
	turn    int         // the bucket the next session joins. Guarded by mu.
	started bool        // the goroutine was started. Guarded by mu.
	stopped bool        // stop was called. Guarded by mu.
	quit    chan struct{}
	done    chan struct{} // closed when the goroutine ends
	scratch []*wsConn     // the bucket being pinged. Owned by run.
}

// pingTick is how often the wheel turns at most: a coarser tick would
// bunch the pings, a finer one wakes the node for a few pings at a time.
const (
	pingTick     = 10 * time.Millisecond
	maxPingWheel = 128
)

func newPinger(interval time.Duration) *pinger {
	tick := min(interval, max(interval/maxPingWheel, pingTick))
	n := max(int(interval/tick), 1)
	return &pinger{tick: tick, buckets: make([][]*wsConn, n), quit: make(chan struct{}), done: make(chan struct{})}
}

// add puts c on the wheel. The goroutine starts with the first session.
// After stop, nothing is added: the sessions are closing.
func (p *pinger) add(c *wsConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if !p.started {
		p.started = true
		go p.run()
	}
	b := p.turn
	p.turn = (p.turn + 1) % len(p.buckets)
	c.pingBucket, c.pingIndex = int32(b), int32(len(p.buckets[b]))
	p.buckets[b] = append(p.buckets[b], c)
}

// remove takes c off the wheel; it is called once, when the session ends,
// after add.
func (p *pinger) remove(c *wsConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.pingBucket < 0 {
		return // not added (the pinger had stopped)
	}
	b := p.buckets[c.pingBucket]
	last := len(b) - 1
	moved := b[last]
	b[c.pingIndex] = moved
	moved.pingIndex = c.pingIndex
	b[last] = nil
	p.buckets[c.pingBucket] = b[:last]
	c.pingBucket = -1
}

// run turns the wheel until stop.
func (p *pinger) run() {
	defer close(p.done)
	t := time.NewTicker(p.tick)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
		}
		p.mu.Lock()
		p.scratch = append(p.scratch[:0], p.buckets[p.next]...)
		p.next = (p.next + 1) % len(p.buckets)
		p.mu.Unlock()
		// No lock held while writing: a session removed meanwhile gets a
		// ping it no longer needs, which its writer refuses or its socket
		// takes.
		for i, c := range p.scratch {
			c.ping()
			p.scratch[i] = nil
		}
	}
}

// stop ends the goroutine and waits for it; it is called once, at
// Shutdown.
func (p *pinger) stop() {
	p.mu.Lock()
	p.stopped = true
	started := p.started
	p.mu.Unlock()
	close(p.quit)
	if started {
		<-p.done
	}
}
