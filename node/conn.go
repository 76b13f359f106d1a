package node

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// wsConn adapts one melody session to hub.Transport.
//
// Outbound frames are coalesced: while one frame is being written, later
// messages wait in a per-session batch and go out together, newline-
// delimited, as the next frame (at most maxBatchFrame bytes each, or one
// larger message alone). A busy session thus costs one write per batch, not
// one per message, and an idle one holds no buffer at all. The batch is
// bounded by Config.QueueBytes; a session that overflows it is a slow
// consumer and Send returns ErrQueueFull (the hub then closes it with 4008).
//
// melody's own queue then holds at most one data frame. If it is ever full,
// melody reports ErrMessageBufferFull to the error handler and drops the
// frame; wsConn turns that report into ErrQueueFull too, so nothing is lost
// silently. melody's Close goes through the same queue, so a close for a
// session whose queue is full is written straight to the socket as one
// complete frame: a write of one frame is atomic on a net.Conn, and RFC 6455
// lets a control frame stand between frames, so the stream stays valid.
type wsConn struct {
	node     *Node
	raw      net.Conn      // the hijacked connection; set once, before melody starts
	hijacked chan struct{} // closed when raw is set

	ms *melody.Session // set in the connect handler, before any message
	hs *hub.Session    // likewise

	unauthIP      string      // the remote IP its unauthenticated slot is counted on
	unauthCounted atomic.Bool // it holds a slot (limits.go)

	overflow atomic.Bool // a frame did not fit (melody's queue or the batch)
	closing  atomic.Bool // Close was called
	timedOut atomic.Bool // the read side missed the pong wait

	mu       sync.Mutex
	inFlight bool     // a frame is queued in melody or being written. Guarded by mu.
	batch    [][]byte // frames waiting for the one in flight. Guarded by mu.
	pending  int      // bytes in batch. Guarded by mu.
	closeMsg []byte   // a close waiting for the batch to drain. Guarded by mu.
}

// maxBatchFrame caps how many bytes of coalesced messages go in one frame.
const maxBatchFrame = 64 << 10

// Send implements hub.Transport. frame is never modified; when it must wait
// it is copied into the batch, since the same bytes go to many sessions.
func (c *wsConn) Send(frame []byte) error {
	if c.closing.Load() {
		return hub.ErrClosed
	}
	c.mu.Lock()
	if c.inFlight {
		if c.pending+len(frame) > c.node.cfg.QueueBytes {
			c.mu.Unlock()
			c.overflow.Store(true)
			return hub.ErrQueueFull
		}
		n := len(c.batch)
		if n == 0 || len(c.batch[n-1])+1+len(frame) > maxBatchFrame {
			c.batch = append(c.batch, append(make([]byte, 0, min(max(len(frame), 512), maxBatchFrame)), frame...))
			c.pending += len(frame)
		} else {
			c.batch[n-1] = append(append(c.batch[n-1], '\n'), frame...)
			c.pending += 1 + len(frame)
		}
		c.mu.Unlock()
		return nil
	}
	c.inFlight = true
	c.mu.Unlock()
	return c.write(frame)
}

// write hands one frame to melody's writer.
func (c *wsConn) write(frame []byte) error {
	if err := c.ms.Write(frame); err != nil {
		return hub.ErrClosed
	}
	// melody calls the error handler synchronously from Write when its
	// queue is full, so the flag is already set if this frame was dropped.
	if c.overflow.Load() {
		return hub.ErrQueueFull
	}
	return nil
}

// sent is melody's report that a text frame was written: the next batch,
// if any, goes out now, and a close that waited for it after that.
func (c *wsConn) sent() {
	c.mu.Lock()
	if len(c.batch) == 0 {
		closeMsg := c.closeMsg
		c.closeMsg = nil
		c.inFlight = closeMsg != nil
		c.mu.Unlock()
		if closeMsg != nil {
			c.enqueueClose(closeMsg)
		}
		return
	}
	next := c.batch[0]
	c.batch[0] = nil
	c.batch = c.batch[1:]
	if len(c.batch) == 0 {
		c.batch = nil // an idle session holds no batch
	}
	c.pending -= len(next)
	c.mu.Unlock()
	if err := c.write(next); err == hub.ErrQueueFull {
		c.hs.SlowConsumer()
	}
}

// Close implements hub.Transport. What was queued before the close is
// written before it: answers due to a client go out even when the hub then
// closes it (for abuse, say). A session whose queue overflowed, or that
// does not drain within the write wait, gets its close frame written
// straight to the socket instead.
func (c *wsConn) Close(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if c.overflow.Load() {
		go c.rawClose(code, reason)
		return
	}
	msg := websocket.FormatCloseMessage(code, reason)
	c.mu.Lock()
	if c.inFlight {
		c.closeMsg = msg // sent() queues it once the batch has drained
		c.mu.Unlock()
		time.AfterFunc(c.node.cfg.WriteWait, func() {
			if !c.ms.IsClosed() {
				c.rawClose(code, reason)
			}
		})
		return
	}
	c.inFlight = true
	c.mu.Unlock()
	c.enqueueClose(msg)
}

// enqueueClose hands a close frame to melody, which writes it after what
// it already holds and then closes the connection.
func (c *wsConn) enqueueClose(msg []byte) {
	if err := c.ms.CloseWithMsg(msg); err != nil {
		return // already closed
	}
	if c.overflow.Load() {
		code, reason := 1000, ""
		if len(msg) >= 2 {
			code, reason = int(binary.BigEndian.Uint16(msg)), string(msg[2:])
		}
		go c.rawClose(code, reason)
	}
}

// rawClose writes a close frame directly to the socket and closes it, for
// a session whose queue is full. A peer too slow to take even that gets the
// TCP connection closed after a second.
func (c *wsConn) rawClose(code int, reason string) {
	frame := make([]byte, 0, 4+len(reason))
	frame = append(frame, 0x88, byte(2+len(reason))) // FIN + close, unmasked
	frame = binary.BigEndian.AppendUint16(frame, uint16(code))
	frame = append(frame, reason...)
	_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.raw.Write(frame)
	_ = c.raw.Close()
}

// alive extends the read deadline: any message from the client counts as a
// sign of life, not only pongs (browsers cannot send pings).
func (c *wsConn) alive() {
	_ = c.raw.SetReadDeadline(time.Now().Add(c.node.cfg.PongWait))
}

// reason says why the connection ended, as far as the transport knows.
func (c *wsConn) reason() hub.Reason {
	if c.timedOut.Load() {
		return schema.ReasonTimeout
	}
	return hub.ReasonClosed
}

// onError sorts melody's error reports.
func (c *wsConn) onError(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, melody.ErrMessageBufferFull):
		c.overflow.Store(true)
	case errors.Is(err, websocket.ErrReadLimit):
		c.node.log.Warn("frame over the size limit, closed with 1009", "remote", c.raw.RemoteAddr().String())
	case errors.As(err, &ne) && ne.Timeout() && !c.closing.Load():
		c.timedOut.Store(true)
	}
}

// hijackCapture records the net.Conn that the WebSocket upgrade hijacks,
// which melody does not expose.
type hijackCapture struct {
	http.ResponseWriter
	conn *wsConn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err == nil {
		h.conn.raw = nc
		close(h.conn.hijacked)
	}
	return nc, rw, err
}
