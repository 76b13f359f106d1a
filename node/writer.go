package node

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/fleethub/fleethub/hub"
)

// The socket's writes. Every byte written to a session's socket goes
// through its wsConn, one writer at a time: the writer that owns the
// socket (busy) is
//
//   - Send, for a delivery to an idle session: it builds the frame header
//     and writes header and payload in one non-blocking writev(2) on its
//     own goroutine (fastwrite_linux.go). No goroutine wakes, no deadline
//     is set, nothing is allocated. If the socket takes only part of the
//     frame (its buffer is full), the rest is kept and a flusher started.
//   - the flusher, a goroutine started when frames wait (Node.goWriter
//     owns it and Shutdown waits for it): it writes the rest of a frame
//     cut short, then the waiting frames, coalesced, each with a blocking
//     write bounded by WriteWait, and exits when none is left.
//   - the node's pinger (pinger.go), for a ping to an idle session, as
//     Send does for a frame; a ping to a busy session is due for the
//     flusher, which writes it after the frame on the wire.
//   - gorilla, through sockConn: the 101 response, the pongs and close
//     replies of the read pump, melody's close. A gorilla
//     write waits for the socket and gets it between two frames, never
//     inside one, so a control frame stands between data frames as RFC
//     6455 allows.
//
// A frame is never interleaved with another: whoever owns the socket
// writes whole frames (or the rest of one), and the socket is handed on
// (release) only between frames. A write that fails leaves the socket
// broken: it is closed and nothing is written to it again. Nor is
// anything after a close frame.

// maxFrameHeader is the longest header of an unmasked frame.
const maxFrameHeader = 10

// headerLen is the length of the header of a frame of n payload bytes.
func headerLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// putHeader writes the header of a final, unmasked text frame of n
// payload bytes at the start of dst and returns its length.
func putHeader(dst []byte, n int) int {
	dst[0] = 0x81 // FIN + text
	switch {
	case n < 126:
		dst[1] = byte(n)
		return 2
	case n <= 0xffff:
		dst[1] = 126
		dst[2], dst[3] = byte(n>>8), byte(n)
		return 4
	}
	dst[1] = 127
	for i := range 8 {
		dst[2+i] = byte(uint64(n) >> (56 - 8*i))
	}
	return 10
}

// appendBatchLocked queues frame behind the others, coalesced into the
// last batch frame while that stays within maxBatchFrame. Each batch
// frame keeps maxFrameHeader bytes of room for its header in front.
// c.mu is held.
func (c *wsConn) appendBatchLocked(frame []byte) {
	n := len(c.batch)
	if n == 0 || len(c.batch[n-1])-maxFrameHeader+1+len(frame) > maxBatchFrame {
		b := make([]byte, maxFrameHeader, maxFrameHeader+min(max(len(frame), 512), maxBatchFrame))
		c.batch = append(c.batch, append(b, frame...))
		c.pending += len(frame)
		return
	}
	c.batch[n-1] = append(append(c.batch[n-1], '\n'), frame...)
	c.pending += 1 + len(frame)
}

// pingFrame is a ping with no payload, as gorilla writes it for melody.
// It is only read.
var pingFrame = [2]byte{0x89, 0}

// ping writes a ping frame: at once when the socket is idle, else after
// the frame on the wire (or the gorilla write waiting), before the frames
// that wait, by the flusher. A session already closing gets none.
func (c *wsConn) ping() {
	c.mu.Lock()
	switch {
	case c.closing.Load() || c.broken:
		c.mu.Unlock()
		return
	case c.busy || !c.hasFast:
		c.pingDue = true
		if c.busy {
			c.mu.Unlock()
			return // the owner hands the socket to a flusher (releaseLocked)
		}
		c.busy = true
		c.mu.Unlock()
		c.startFlusher()
		return
	}
	c.busy = true
	c.mu.Unlock()
	_ = c.writeOwned(pingFrame[:], nil, c.node.monoNow())
}

// writeFast writes frame to the idle socket that Send took, without
// waiting, and hands the socket on.
func (c *wsConn) writeFast(frame []byte, now int64) error {
	hl := putHeader(c.hdr[:], len(frame))
	return c.writeOwned(c.hdr[:hl], frame, now)
}

// writeOwned writes a frame, header and payload, to the idle socket that
// the caller took, without waiting, and hands the socket on. What the
// socket did not take is kept (rest) for a flusher.
func (c *wsConn) writeOwned(hdr, frame []byte, now int64) error {
	hl := len(hdr)
	n, err := c.fast.write(hdr, frame)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A deadline left by the last blocking write has passed. A write
		// that does not wait needs none; nothing was written.
		_ = c.raw.SetWriteDeadline(time.Time{})
		n, err = c.fast.write(hdr, frame)
	}
	if err != nil {
		c.fail(err)
		return hub.ErrClosed
	}
	c.mu.Lock()
	if total := hl + len(frame); n < total {
		rest := make([]byte, 0, total-n)
		if n < hl {
			rest = append(rest, hdr[n:]...)
			n = hl
		}
		c.rest = append(rest, frame[n-hl:]...)
	}
	c.lastWrite = now
	flush, closeMsg := c.releaseLocked()
	c.mu.Unlock()
	c.afterRelease(flush, closeMsg)
	return nil
}

// releaseLocked hands the socket on from its owner, between two frames:
// to a flusher when the rest of a frame or a raw close waits (flush: the
// caller starts it, busy stays set for it); else to a gorilla write that
// waits; else to a flusher for a ping due or the waiting frames; else to
// no one, and a
// close that waited for the frames to drain is returned, for the caller
// to hand to melody. c.mu is held.
func (c *wsConn) releaseLocked() (flush bool, closeMsg []byte) {
	switch {
	case c.rest != nil || c.kill != nil:
		return true, nil
	case c.waiting > 0:
		c.granted = true
		c.wakeLocked()
		return false, nil
	case len(c.batch) > 0 || c.pingDue:
		return true, nil
	}
	c.busy = false
	closeMsg, c.closeMsg = c.closeMsg, nil
	return false, closeMsg
}

// wakeLocked wakes the gorilla writes waiting for the socket, to find it
// granted to one of them (the others wait again) or broken. A channel made
// only when a write waits, which is rare, costs an idle session nothing,
// where a sync.Cond would hold 56 bytes. c.mu is held.
func (c *wsConn) wakeLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

// afterRelease does, with c.mu no longer held, what releaseLocked left.
func (c *wsConn) afterRelease(flush bool, closeMsg []byte) {
	if flush {
		c.startFlusher()
	}
	if closeMsg != nil {
		c.enqueueClose(closeMsg)
	}
}

// startFlusher starts a flusher for the socket, which the caller owns
// (busy). A node that is shutting down starts none: the socket is closed.
func (c *wsConn) startFlusher() {
	if !c.node.goWriter(c.flush) {
		c.fail(net.ErrClosed)
	}
}

// flush is the flusher: it owns the socket until it hands it on.
func (c *wsConn) flush() {
	for {
		c.mu.Lock()
		if c.broken {
			c.mu.Unlock()
			return
		}
		var b []byte
		deadline := time.Now().Add(c.node.cfg.WriteWait)
		switch {
		case c.kill != nil:
			// The rest of the frame on the wire, then the close, then the
			// end: within the close's second, whatever the peer does.
			b = append(c.rest, c.kill...)
			c.rest, c.kill = nil, nil
			c.broken = true
			c.wakeLocked()
			_ = c.raw.SetWriteDeadline(c.killBy)
			c.mu.Unlock()
			_, _ = c.raw.Write(b)
			c.endAfterClose()
			return
		case c.rest != nil:
			b, c.rest = c.rest, nil
		case c.waiting > 0 || (len(c.batch) == 0 && !c.pingDue):
			c.lastWrite = c.node.monoNow()
			_, closeMsg := c.releaseLocked() // no rest, no kill: no flusher asked for
			c.mu.Unlock()
			c.afterRelease(false, closeMsg)
			return
		case c.pingDue:
			c.pingDue = false
			b = pingFrame[:]
		default:
			b = c.batch[0]
			c.batch[0] = nil
			c.batch = c.batch[1:]
			if len(c.batch) == 0 {
				c.batch = nil // an idle session holds no batch
			}
			c.pending -= len(b) - maxFrameHeader
			n := len(b) - maxFrameHeader
			b = b[maxFrameHeader-headerLen(n):]
			putHeader(b, n)
		}
		// Set under c.mu, so that a raw close's shorter deadline, set
		// under it too, is never undone.
		_ = c.raw.SetWriteDeadline(deadline)
		c.mu.Unlock()
		if _, err := c.raw.Write(b); err != nil {
			c.fail(err)
			return
		}
	}
}

// fail gives up on a socket whose write failed (or that cannot get a
// flusher): a frame may have been cut short, so nothing is written to it
// again; it is closed, which ends the read pump and the session. A write
// that timed out makes the session end as timed out, as a read does.
func (c *wsConn) fail(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !c.closing.Load() {
		c.timedOut.Store(true)
	}
	c.mu.Lock()
	c.busy, c.broken, c.pingDue = true, true, false
	c.rest, c.batch, c.pending, c.kill, c.closeMsg = nil, nil, 0, nil, nil
	c.wakeLocked()
	c.mu.Unlock()
	_ = c.raw.Close()
}

// sockConn is the hijacked connection as gorilla sees it: reads go
// straight through, writes wait for the socket like wsConn's own.
// gorilla writes one whole frame (or the 101 response) per Write, and
// sets the deadline for it just before, through SetWriteDeadline.
type sockConn wsConn

func (s *sockConn) Read(b []byte) (int, error)        { return s.raw.Read(b) }
func (s *sockConn) Close() error                      { return s.raw.Close() }
func (s *sockConn) LocalAddr() net.Addr               { return s.raw.LocalAddr() }
func (s *sockConn) RemoteAddr() net.Addr              { return (*sessionAddr)(s) }
func (s *sockConn) SetReadDeadline(t time.Time) error { return (*wsConn)(s).setReadDeadline(t) }

// SetWriteDeadline records the time gorilla allows its next write; the
// socket's own deadline belongs to the writer that owns it. The time is
// counted from when the write gets the socket: it bounds the write, not
// the wait for the socket, which the owner's own deadline bounds. (A pong
// gorilla gives a second would otherwise fail, unwritten, behind a large
// frame to a slow reader, and gorilla writes nothing after a failed write,
// not even the close.)
func (s *sockConn) SetWriteDeadline(t time.Time) error {
	var d time.Duration
	if !t.IsZero() {
		d = max(time.Until(t), 0)
	}
	s.mu.Lock()
	s.nextWriteTime = d
	s.mu.Unlock()
	return nil
}

func (s *sockConn) SetDeadline(t time.Time) error {
	_ = s.SetWriteDeadline(t)
	return (*wsConn)(s).setReadDeadline(t)
}

// setReadDeadline sets the socket's read deadline, unless a close went
// straight to the socket: the read side then ends with the close's second
// (endAfterClose), and no pong or message extends it.
func (c *wsConn) setReadDeadline(t time.Time) error {
	if c.ending.Load() {
		return nil
	}
	return c.raw.SetReadDeadline(t)
}

// Write writes one of gorilla's frames once the socket is free, within
// the time gorilla allowed (WriteWait when it set no deadline).
func (s *sockConn) Write(b []byte) (int, error) {
	c := (*wsConn)(s)
	c.mu.Lock()
	if c.busy && !c.broken {
		c.waiting++
		for !c.granted && !c.broken {
			if c.wake == nil {
				c.wake = make(chan struct{})
			}
			wake := c.wake
			c.mu.Unlock()
			<-wake
			c.mu.Lock()
		}
		c.waiting--
		if !c.broken {
			c.granted = false // taken
		}
	}
	if c.broken {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.busy = true
	d := c.nextWriteTime
	if d == 0 {
		d = c.node.cfg.WriteWait
	}
	deadline := time.Now().Add(d)
	if !c.killBy.IsZero() && c.killBy.Before(deadline) {
		deadline = c.killBy
	}
	_ = c.raw.SetWriteDeadline(deadline)
	c.mu.Unlock()
	n, err := c.raw.Write(b)
	if err != nil {
		c.fail(err)
		return n, err
	}
	c.mu.Lock()
	if len(b) > 0 && b[0] == 0x88 {
		// A close frame (melody's at shutdown, or the read pump's answer
		// to the client's close): nothing may follow it, and gorilla
		// writes nothing after it. melody closes the socket next.
		c.broken, c.pingDue = true, false
		c.rest, c.batch, c.pending, c.kill, c.closeMsg = nil, nil, 0, nil, nil
		c.wakeLocked()
		c.mu.Unlock()
		return n, nil
	}
	flush, closeMsg := c.releaseLocked()
	c.mu.Unlock()
	c.afterRelease(flush, closeMsg)
	return n, nil
}

// endAfterClose ends the connection after a close frame written straight
// to the socket (a slow consumer's, or a stuck session's). Closing the
// socket at once would make the kernel answer with a reset whatever the
// peer still sends (the pongs to the pings it reads before the close,
// its close reply), and a reset discards what the peer has not read yet:
// the close frame itself. So the write side is shut (FIN after the
// close frame) and the read pump keeps reading, and discarding, until
// the peer closes or the close's second is over; melody then closes the
// socket. A connection that cannot be half-closed (TLS) is closed now.
func (c *wsConn) endAfterClose() {
	hc, ok := c.raw.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil {
		_ = c.raw.Close()
		return
	}
	c.mu.Lock()
	by := c.killBy
	c.mu.Unlock()
	if err := c.raw.SetReadDeadline(by); err != nil {
		_ = c.raw.Close()
	}
}
