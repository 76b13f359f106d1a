package hub

import (
	"sync"
	"time"

	"github.com/nats-io/nuid"
)

// coalescer delivers status pushes to admins at most once per window per
// device, the latest winning: a device reporting at 100 Hz costs a
// dashboard a few updates a second, and its last status always arrives.
type coalescer struct {
	srv    *Server
	window time.Duration

	mu      sync.Mutex
	devices map[string]*pendingStatus // Guarded by mu.
}

type pendingStatus struct {
	last       time.Time // when a push for this device last went out
	data       []byte    // the latest status not yet pushed, or nil
	typ, group string
	timer      *time.Timer
	offered    uint64 // statuses offered so far

	// Pushes of one device may start on two goroutines (the stream's
	// consumer and the window's timer). One of them at a time delivers,
	// with no lock held while it sends; a status offered meanwhile waits in
	// next and the deliverer sends it after its own, so order holds end to
	// end, and one older than what already went out is dropped.
	deliverMu  sync.Mutex
	pushed     uint64 // the offer number of the last status delivered. Guarded by deliverMu.
	delivering bool   // a goroutine is delivering. Guarded by deliverMu.
	next       *queuedStatus
}

// queuedStatus is a status waiting for the device's deliverer.
type queuedStatus struct {
	n          uint64
	typ, group string
	data       []byte
}

func newCoalescer(srv *Server) *coalescer {
	return &coalescer{srv: srv, window: srv.cfg.CoalesceWindow, devices: make(map[string]*pendingStatus)}
}

// offer hands the coalescer a device's latest status.
func (c *coalescer) offer(sn, typ, group string, data []byte) {
	now := time.Now()
	c.mu.Lock()
	p := c.devices[sn]
	if p == nil {
		p = &pendingStatus{}
		c.devices[sn] = p
	}
	p.offered++
	n := p.offered
	if p.timer == nil && now.Sub(p.last) >= c.window {
		p.last = now
		c.mu.Unlock()
		c.push(p, sn, typ, group, data, n)
		return
	}
	if p.data != nil {
		c.srv.metrics.statusCoalesced.Inc()
	}
	p.data, p.typ, p.group = data, typ, group
	if p.timer == nil {
		p.timer = time.AfterFunc(c.window-now.Sub(p.last), func() { c.flush(sn) })
	}
	c.mu.Unlock()
}

func (c *coalescer) flush(sn string) {
	c.mu.Lock()
	p := c.devices[sn]
	if p == nil || p.data == nil {
		if p != nil {
			p.timer = nil
		}
		c.mu.Unlock()
		return
	}
	data, typ, group, n := p.data, p.typ, p.group, p.offered
	p.data, p.timer, p.last = nil, nil, time.Now()
	c.mu.Unlock()
	c.push(p, sn, typ, group, data, n)
}

// push delivers status number n of a device unless a later one already
// went out.
func (c *coalescer) push(p *pendingStatus, sn, typ, group string, data []byte, n uint64) {
	p.deliverMu.Lock()
	if n <= p.pushed || (p.next != nil && n <= p.next.n) {
		p.deliverMu.Unlock()
		c.srv.metrics.statusCoalesced.Inc()
		return
	}
	if p.delivering {
		if p.next != nil {
			c.srv.metrics.statusCoalesced.Inc()
		}
		p.next = &queuedStatus{n: n, typ: typ, group: group, data: data}
		p.deliverMu.Unlock()
		return
	}
	p.delivering, p.pushed = true, n
	p.deliverMu.Unlock()
	for {
		c.srv.subs.deliver(topicStatus, 0, sn, typ, group, "/push/status", nuid.Next(), data)
		p.deliverMu.Lock()
		q := p.next
		p.next = nil
		if q == nil {
			p.delivering = false
			p.deliverMu.Unlock()
			return
		}
		p.pushed, typ, group, data = q.n, q.typ, q.group, q.data
		p.deliverMu.Unlock()
	}
}

// sweep drops devices that have been quiet for a while, bounding memory.
func (c *coalescer) sweep(quiet time.Duration) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for sn, p := range c.devices {
		if p.timer == nil && p.data == nil && now.Sub(p.last) > quiet {
			delete(c.devices, sn)
		}
	}
}
