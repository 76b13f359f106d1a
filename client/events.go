package client

import "encoding/json"

// runEvents runs the callbacks queued on events, one at a time and in
// order, until run closes the queue at its end.
func (c *Client) runEvents() {
	for f := range c.events {
		f()
	}
}

// emit queues a callback from a connection's reader. It waits while the
// queue is full (the reader then stops reading, and the hub's queue holds
// the rest), and drops the callback once the client stops.
func (c *Client) emit(f func()) {
	select {
	case c.events <- f:
	case <-c.ctx.Done():
	}
}

// emitState queues OnState. Only Dial and run call it, and run closes the
// queue after its last call, so it may wait for room.
func (c *Client) emitState(s State) {
	if c.cfg.OnState == nil {
		return
	}
	c.events <- func() { c.cfg.OnState(s) }
}

func (c *Client) deliverPush(p Push) {
	if c.cfg.OnPush != nil {
		c.emit(func() { c.cfg.OnPush(p) })
	}
}

func (c *Client) deliverSnapshot(v json.RawMessage) {
	if c.cfg.OnSnapshot != nil {
		c.emit(func() { c.cfg.OnSnapshot(v) })
	}
}
