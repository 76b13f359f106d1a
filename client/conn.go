package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/gorilla/websocket"
)

// Timings of a connection.
const (
	// outQueue bounds the messages waiting for the writer; senders wait
	// (bounded by their ctx) while it is full.
	outQueue = 64
	// writeWait bounds one frame write.
	writeWait = 10 * time.Second
	// closeWait is how long Close waits for the hub to answer its close
	// frame before it closes the socket anyway.
	closeWait = time.Second
	// defaultPingInterval is assumed until the auth answer says.
	defaultPingInterval = 10 * time.Second
)

// conn is one WebSocket connection: a reader that dispatches what the hub
// sends, and the connection's only writer, fed by a bounded queue. It dies
// once, with a cause (context.Cause(ctx)), and is never reused.
type conn struct {
	c   *Client
	ws  *websocket.Conn
	url string
	out chan []byte // one message per frame, to the writer

	// ctx ends when the connection is dead; its cause says why. It is
	// cancelled only under Client.mu (see markDead).
	ctx        context.Context
	cancel     context.CancelCauseFunc
	readerDone chan struct{}
	wg         sync.WaitGroup // reader and writer

	ping atomic.Int64 // the hub's ping interval, in nanoseconds

	mu      sync.Mutex
	pending map[string]*pending // requests waiting for their answer, by request_id. Guarded by mu.
}

// pending is a request waiting for its answer.
type pending struct {
	ch chan Response // buffered: the reader never waits on it
	// onAnswer, if set, runs on the reader before the answer is handed
	// over, so that what it records comes before anything read later.
	onAnswer func(Response)
}

func newConn(c *Client, ws *websocket.Conn, url string) *conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	cn := &conn{
		c: c, ws: ws, url: url, out: make(chan []byte, outQueue),
		ctx: ctx, cancel: cancel, readerDone: make(chan struct{}),
		pending: make(map[string]*pending),
	}
	cn.ping.Store(int64(defaultPingInterval))
	ws.SetPingHandler(cn.onPing)
	cn.wg.Add(2)
	go cn.readLoop()
	go cn.writeLoop()
	return cn
}

// wait returns once the reader and writer have ended.
func (cn *conn) wait() { cn.wg.Wait() }

func (cn *conn) setPingInterval(d time.Duration) {
	if d > 0 {
		cn.ping.Store(int64(d))
	}
}

// extendDeadline gives the hub two and a half ping intervals to show a
// sign of life (a ping or a frame): a connection that broke without a word
// (a half-open TCP connection) is noticed rather than waited on forever.
func (cn *conn) extendDeadline() {
	_ = cn.ws.SetReadDeadline(time.Now().Add(time.Duration(cn.ping.Load()) * 5 / 2))
}

// onPing answers a ping as gorilla's default handler does, and counts it
// as a sign of life. It runs on the reader.
func (cn *conn) onPing(data string) error {
	cn.extendDeadline()
	err := cn.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
	var ne interface{ Timeout() bool }
	if err == websocket.ErrCloseSent || errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// markDead records why the connection ended, once, and stops requests
// from being routed to it. It reports whether this call did it.
func (cn *conn) markDead(cause error) bool {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn.ctx.Err() != nil {
		return false
	}
	cn.cancel(cause)
	if c.cur == cn {
		c.cur = nil
		c.ready = make(chan struct{})
	}
	return true
}

// fail ends the connection at once: the hub closed it, or it broke.
func (cn *conn) fail(cause error) {
	cn.markDead(cause)
	_ = cn.ws.Close()
}

// close ends the connection from this side: a close frame with 1000, then
// the socket once the hub has answered it or closeWait has passed.
func (cn *conn) close(cause error) {
	if !cn.markDead(cause) {
		_ = cn.ws.Close()
		return
	}
	_ = cn.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeWait))
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-cn.readerDone:
	case <-t.C:
	}
	_ = cn.ws.Close()
}

func (cn *conn) readLoop() {
	defer cn.wg.Done()
	defer close(cn.readerDone)
	for {
		cn.extendDeadline()
		typ, frame, err := cn.ws.ReadMessage()
		if err != nil {
			cn.fail(err)
			return
		}
		if typ != websocket.TextMessage {
			cn.c.log.Warn("binary frame from the hub ignored", "url", cn.url)
			continue
		}
		// A frame holds one message or several, newline-delimited.
		wire.Lines(frame, cn.handle)
	}
}

// handle dispatches one message from the hub. It runs on the reader.
func (cn *conn) handle(line []byte) {
	var m inbound
	if err := json.Unmarshal(line, &m); err != nil {
		cn.c.log.Warn("unreadable message from the hub ignored", "url", cn.url, "err", err)
		return
	}
	switch m.Op {
	case wire.OpResponse:
		cn.resolve(&m)
	case wire.OpPush:
		cn.c.deliverPush(Push{Service: m.Service, ID: m.ID, Values: values(m.Values)})
	case wire.OpRequest:
		cn.c.dispatchCommand(cn, &m)
	default:
		cn.c.log.Warn("message with an unknown op ignored", "url", cn.url, "op", m.Op)
	}
}

// resolve hands a response to the request waiting for it.
func (cn *conn) resolve(m *inbound) {
	r := Response{Code: m.Code, Msg: m.Msg, Values: values(m.Values)}
	if m.RequestID == "" {
		// The hub could not read a message well enough to know its id.
		cn.c.log.Warn("hub refused a message", "url", cn.url, "code", m.Code, "msg", m.Msg)
		return
	}
	cn.mu.Lock()
	p := cn.pending[m.RequestID]
	delete(cn.pending, m.RequestID)
	cn.mu.Unlock()
	if p == nil {
		cn.c.log.Debug("answer to a request no longer waiting", "url", cn.url, "request_id", m.RequestID)
		return
	}
	if p.onAnswer != nil {
		p.onAnswer(r)
	}
	p.ch <- r
}

func (cn *conn) writeLoop() {
	defer cn.wg.Done()
	for {
		select {
		case frame := <-cn.out:
			_ = cn.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if err := cn.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
				cn.fail(fmt.Errorf("write: %w", err))
				return
			}
		case <-cn.ctx.Done():
			return
		}
	}
}

// send queues one message for the writer, waiting while the queue is full.
// It returns errNotSent when the connection is dead, and ctx's error.
func (cn *conn) send(ctx context.Context, msg []byte) error {
	if cn.ctx.Err() != nil {
		return errNotSent
	}
	select {
	case cn.out <- msg:
		return nil
	case <-cn.ctx.Done():
		return errNotSent
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trySend queues msg unless the queue is full; for the reader, which must
// never wait on the writer.
func (cn *conn) trySend(msg []byte) bool {
	select {
	case cn.out <- msg:
		return true
	default:
		return false
	}
}

// roundTrip sends a request on this connection and waits, at most wait,
// for its answer. An answer with a non-zero code comes with an *Error.
func (cn *conn) roundTrip(ctx context.Context, service string, args json.RawMessage, wait time.Duration, onAnswer func(Response)) (Response, error) {
	id := fmt.Sprintf("c%d", cn.c.seq.Add(1))
	p := &pending{ch: make(chan Response, 1), onAnswer: onAnswer}
	cn.mu.Lock()
	cn.pending[id] = p
	cn.mu.Unlock()
	defer func() {
		cn.mu.Lock()
		delete(cn.pending, id)
		cn.mu.Unlock()
	}()
	if err := cn.send(ctx, wire.EncodeRequest(service, id, args)); err != nil {
		return Response{}, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-p.ch:
		return r, r.err()
	case <-cn.ctx.Done():
		select {
		case r := <-p.ch: // answered just before the end
			return r, r.err()
		default:
		}
		err, _ := cn.c.classify(context.Cause(cn.ctx))
		return Response{}, err
	case <-ctx.Done():
		return Response{}, ctx.Err()
	case <-t.C:
		return Response{}, fmt.Errorf("%w: %s: no answer within %v", ErrTimeout, service, wait)
	}
}
