package node

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// wsConn adapts one melody session to hub.Transport.
//
// melody queues outbound frames in a bounded channel, and when it is full
// it reports ErrMessageBufferFull to the error handler and drops the frame.
// The hub must never lose a frame silently, so wsConn turns that report
// into ErrQueueFull (and the hub closes the session with 4008). melody's
// own Close goes through the same full queue, so a close then is written
// straight to the socket as one complete frame: a write of one frame is
// atomic on a net.Conn, and RFC 6455 lets a control frame stand between
// frames, so the stream stays valid.
type wsConn struct {
	node *Node
	raw  net.Conn // the hijacked connection; set once, before melody starts

	ms *melody.Session // set in the connect handler, before any message
	hs *hub.Session    // likewise

	overflow atomic.Bool // the outbound queue overflowed at least once
	closing  atomic.Bool // Close was called
	timedOut atomic.Bool // the read side missed the pong wait
}

// Send implements hub.Transport.
func (c *wsConn) Send(frame []byte) error {
	if c.closing.Load() {
		return hub.ErrClosed
	}
	if err := c.ms.Write(frame); err != nil {
		return hub.ErrClosed
	}
	// melody calls the error handler synchronously from Write when the
	// queue is full, so the flag is already set if this frame was dropped.
	if c.overflow.Load() {
		return hub.ErrQueueFull
	}
	return nil
}

// Close implements hub.Transport.
func (c *wsConn) Close(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if !c.overflow.Load() {
		if err := c.ms.CloseWithMsg(websocket.FormatCloseMessage(code, reason)); err != nil {
			return // already closed
		}
		if !c.overflow.Load() {
			return
		}
	}
	go c.rawClose(code, reason)
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
		return hub.ReasonTimeout
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
	}
	return nc, rw, err
}
