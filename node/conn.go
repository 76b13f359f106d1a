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
// melody reads the socket (its read pump) and keeps the session set; the
// writes are wsConn's (writer.go), pings included (pinger.go). A delivery to an idle session
// is one non-blocking write on the goroutine that delivers it. Frames that
// find the socket busy wait in a per-session batch and go out together,
// newline-delimited, as the next frame (at most maxBatchFrame bytes each,
// or one larger message alone), written by a flusher goroutine that lives
// while there is something to write. A busy session thus costs one write
// per batch, not one per message, and an idle one holds no buffer and no
// goroutine. The batch is bounded by Config.QueueBytes; a session that
// overflows it is a slow consumer and Send returns ErrQueueFull (the hub
// then closes it with 4008).
type wsConn struct {
	node *Node
	raw  net.Conn // the hijacked connection; set once, before melody starts
	// upgraded is closed once the upgrade has hijacked the connection, or
	// was refused; nil from then on. Owned by the session's goroutine,
	// which serveWS starts.
	upgraded chan struct{}

	ms *melody.Session // set in the connect handler, before any message
	hs *hub.Session    // likewise

	unauthIP      string      // the remote IP its unauthenticated slot is counted on
	unauthCounted atomic.Bool // it holds a slot (limits.go)

	overflow atomic.Bool // a frame did not fit the batch (or a close melody's queue)
	closing  atomic.Bool // Close was called
	timedOut atomic.Bool // the read side missed the pong wait, or a write its deadline
	ending   atomic.Bool // a close went straight to the socket: reads end with its second (endAfterClose)

	hasFast bool                 // fast can write to raw; set with raw
	fast    fastWriter           // Owned by the socket's owner.
	hdr     [maxFrameHeader]byte // the frame header of a fast write. Owned by the socket's owner.

	mu            sync.Mutex
	wake          chan struct{} // closed when the socket is granted to a waiting gorilla write, or broken; made by one that waits. Guarded by mu.
	busy          bool          // a writer owns the socket (writer.go). Guarded by mu.
	broken        bool          // a write failed, or a close went out: nothing more is written. Guarded by mu.
	waiting       int           // gorilla writes waiting for the socket. Guarded by mu.
	granted       bool          // the socket was handed to one of them. Guarded by mu.
	rest          []byte        // the unwritten end of a frame cut short: written first. Guarded by mu.
	batch         [][]byte      // frames waiting, each behind maxFrameHeader bytes of room. Guarded by mu.
	pending       int           // payload bytes in batch. Guarded by mu.
	closeMsg      []byte        // a close waiting for the batch to drain. Guarded by mu.
	kill          []byte        // a close frame for right after rest, in place of the batch. Guarded by mu.
	killBy        time.Time     // the deadline of kill and of every write once it is set. Guarded by mu.
	nextWriteTime time.Duration // what gorilla allows its next write, 0 for no deadline. Guarded by mu.
	lastWrite     int64         // when a fast write or a flusher last ended (Node.monoNow). Guarded by mu.
	pingDue       bool          // a ping waits for the socket (pinger.go). Guarded by mu.

	// Where the session is on the pinger's wheel, -1 when not on it.
	// Guarded by the pinger's mu.
	pingBucket, pingIndex int32
}

// maxBatchFrame caps how many bytes of coalesced messages go in one frame.
const maxBatchFrame = 64 << 10

// burstWindow is how soon after the last write a frame counts as part of
// a burst: it then waits in the batch for a flusher, with the frames that
// follow it, instead of taking a write of its own. Frames delivered one
// after another to one session come well within it; a session that gets
// frames further apart than a write takes gains nothing from waiting.
const burstWindow = 50 * time.Microsecond

func newWSConn(n *Node, unauthIP string) *wsConn {
	c := &wsConn{node: n, upgraded: make(chan struct{}), unauthIP: unauthIP, pingBucket: -1}
	c.unauthCounted.Store(true)
	return c
}

// Send implements hub.Transport. frame is never modified; when it must wait
// it is copied into the batch, since the same bytes go to many sessions.
func (c *wsConn) Send(frame []byte) error {
	c.mu.Lock()
	switch {
	case c.closing.Load() || c.broken:
		// Checked under c.mu: a Close that finds the socket free knows
		// that no data frame can follow its close frame.
		c.mu.Unlock()
		return hub.ErrClosed
	case c.busy:
		if c.pending+len(frame) > c.node.cfg.QueueBytes {
			c.mu.Unlock()
			c.overflow.Store(true)
			return hub.ErrQueueFull
		}
		c.appendBatchLocked(frame)
		c.mu.Unlock()
		return nil
	}
	c.busy = true
	now := c.node.monoNow()
	if !c.hasFast || now-c.lastWrite < int64(c.node.burst) {
		// In a burst, the frames coalesce behind this one.
		c.appendBatchLocked(frame)
		c.mu.Unlock()
		c.startFlusher()
		return nil
	}
	c.mu.Unlock()
	return c.writeFast(frame, now)
}

// Close implements hub.Transport. What was queued before the close is
// written before it: answers due to a client go out even when the hub then
// closes it (for abuse, say). A session whose queue overflowed, or that
// does not drain within the write wait, gets its close frame written
// right after the frame on the wire instead (rawClose).
func (c *wsConn) Close(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if c.overflow.Load() {
		c.rawClose(code, reason)
		return
	}
	msg := websocket.FormatCloseMessage(code, reason)
	c.mu.Lock()
	if c.busy {
		c.closeMsg = msg // handed to melody once the batch has drained (releaseLocked)
		c.mu.Unlock()
		time.AfterFunc(c.node.cfg.WriteWait, func() {
			if !c.ms.IsClosed() {
				c.rawClose(code, reason)
			}
		})
		return
	}
	c.mu.Unlock()
	c.enqueueClose(msg)
}

// enqueueClose hands a close frame to melody, which writes it (through
// sockConn) and then closes the connection.
func (c *wsConn) enqueueClose(msg []byte) {
	if err := c.ms.CloseWithMsg(msg); err != nil {
		return // already closed
	}
	if c.overflow.Load() {
		code, reason := 1000, ""
		if len(msg) >= 2 {
			code, reason = int(binary.BigEndian.Uint16(msg)), string(msg[2:])
		}
		c.rawClose(code, reason)
	}
}

// rawClose closes a session whose queue overflowed or does not drain: the
// waiting frames are dropped, the close frame goes right after the frame
// on the wire (if one was cut short, its rest first, so the stream stays
// valid), and the connection is closed. A peer too slow to take even that
// within a second gets the TCP connection closed then. It never blocks.
func (c *wsConn) rawClose(code int, reason string) {
	frame := make([]byte, 0, 4+len(reason))
	frame = append(frame, 0x88, byte(2+len(reason))) // FIN + close, unmasked
	frame = binary.BigEndian.AppendUint16(frame, uint16(code))
	frame = append(frame, reason...)
	c.mu.Lock()
	if c.broken || c.kill != nil {
		c.mu.Unlock()
		return
	}
	c.batch, c.pending, c.closeMsg = nil, 0, nil
	c.kill = frame
	c.killBy = time.Now().Add(time.Second)
	c.ending.Store(true)
	if c.busy {
		// The owner hands the socket to a flusher, which writes kill. A
		// blocking write under way gets the second too.
		_ = c.raw.SetWriteDeadline(c.killBy)
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	c.startFlusher()
}

// alive extends the read deadline: any message from the client counts as a
// sign of life, not only pongs (browsers cannot send pings).
func (c *wsConn) alive() {
	_ = c.setReadDeadline(time.Now().Add(c.node.cfg.PongWait))
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
// which melody does not expose, and gives gorilla the wsConn's sockConn
// in its place, so that gorilla's writes take their turn with the
// session's.
type hijackCapture struct {
	http.ResponseWriter
	conn *wsConn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := h.conn
	c.raw = nc
	c.hasFast = c.fast.init(nc)
	close(c.upgraded)
	c.upgraded = nil
	return (*sockConn)(c), rw, nil
}

// sessionAddr is a session's remote address as gorilla, and so melody,
// reports it (sockConn.RemoteAddr): the connection's own, which also
// leads from a melody session to its wsConn (connOf) without a map or
// anything stored per session.
type sessionAddr wsConn

func (a *sessionAddr) Network() string { return a.raw.RemoteAddr().Network() }
func (a *sessionAddr) String() string  { return a.raw.RemoteAddr().String() }
