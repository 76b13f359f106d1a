package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of a client.
const (
	// maxCommands is how many OnCommand handlers may run at once; more
	// commands are answered 429 at once rather than queued without bound.
	maxCommands = 16
	// eventQueue is how many callbacks may wait for the callback
	// goroutine before the connection's reader waits too.
	eventQueue = 256
)

// Client is a connection to a hub that stays up. Dial returns it
// authenticated; from then on a goroutine of its own reconnects whenever
// the connection ends (with capped, jittered exponential backoff),
// authenticates again, and replays the subscriptions made with Subscribe,
// until Close is called or the hub says not to come back (see Err).
//
// Requests may be made from any goroutine. Callbacks (OnPush, OnSnapshot,
// OnState) run one at a time, in order, on a goroutine of the client's;
// they may call the client's methods but must not call Close, which waits
// for them, and a slow callback holds up the ones after it.
type Client struct {
	cfg   Config
	urls  []string
	log   *slog.Logger
	randN func(int64) int64 // backoff jitter source

	ctx    context.Context // ends when the client stops
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the client; Close waits for it
	done   chan struct{}  // closed when the client has stopped for good
	events chan func()    // callbacks, run in order by runEvents; closed by run at its end
	cmds   chan struct{}  // OnCommand slots
	seq    atomic.Uint64  // request ids

	next int // index in urls of the next attempt. Owned by Dial, then by run.

	// Lock order: Client.mu before conn.mu; neither is held while sending
	// to a channel or calling back.
	mu       sync.Mutex
	cur      *conn         // the live, authenticated connection requests go to; nil while there is none. Guarded by mu.
	ready    chan struct{} // closed when cur is set. Guarded by mu.
	session  Session       // the last auth answer. Guarded by mu.
	token    string        // the token of the last login, for resuming. Guarded by mu.
	tokenExp time.Time     // when token expires. Guarded by mu.
	err      error         // why the client stopped; nil while it runs. Guarded by mu.
	subs     subLog        // subscriptions to replay. Guarded by mu.
}

// tokenMargin is how long before its expiry a token is no longer used to
// resume: a login is cheaper than a session closed at once with 4003.
const tokenMargin = time.Minute

// Dial connects to the hub and authenticates, trying each configured URL
// once in turn, and returns once authenticated. ctx bounds only this first
// connection; the client then runs until Close. An authentication refusal
// (a 400, 401 or 403 answer) is returned at once as an *Error; otherwise
// Dial returns the last attempt's error. When Dial fails, nothing of the
// client is left running, and OnState has been told of each attempt
// (StateConnecting, StateDisconnected) but gets no StateClosed.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := newClient(cfg.withDefaults())
	c.start(c.runEvents)
	var err error
	for range c.urls {
		var cn *conn
		cn, err = c.connect(ctx)
		if err == nil {
			c.start(func() { c.run(cn) })
			return c, nil
		}
		if _, stop := c.classify(err); stop || ctx.Err() != nil {
			break
		}
	}
	c.stop(err)
	close(c.events)
	c.wg.Wait()
	return nil, err
}

func newClient(cfg Config) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	log := cfg.Logger
	switch {
	case cfg.Device != nil:
		log = log.With("sn", cfg.Device.SN)
	case cfg.Login != nil:
		log = log.With("user", cfg.Login.Username)
	}
	return &Client{
		cfg: cfg, urls: cfg.urls(), log: log, randN: jitter,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		events: make(chan func(), eventQueue), cmds: make(chan struct{}, maxCommands),
		ready: make(chan struct{}),
	}
}

// start runs f on a goroutine that Close waits for.
func (c *Client) start(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// Close closes the connection with 1000, stops reconnecting, fails the
// requests waiting for an answer or a connection with ErrClosed, and waits
// for every goroutine of the client, OnCommand handlers (whose ctx ends)
// and callbacks included, to end. It must therefore not be called from a
// callback or a handler. It is idempotent and returns nil.
func (c *Client) Close() error {
	c.stop(ErrClosed)
	c.wg.Wait()
	return nil
}

// Err returns nil while the client runs, and why it stopped once it has:
// ErrClosed after Close, or the hub's reason (ErrReplaced, ErrKicked,
// ErrPolicy, ErrTokenExpired, an *Error refusing re-authentication),
// possibly wrapped.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the client has stopped for good; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Session returns the values of the last successful authentication: the
// current connection's, or the last one's while the client reconnects.
func (c *Client) Session() Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session.clone()
}

// stop records why the client stops (the first reason wins) and ends its
// context, which makes run close the connection and return.
func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.cancel()
}

// run keeps the client connected: it serves cn until it ends, then
// reconnects after a backoff, until the client stops.
func (c *Client) run(cn *conn) {
	defer c.finish()
	attempt := 0
	for {
		if cn != nil {
			cause := c.serve(cn)
			reason, stop := c.classify(cause)
			c.log.Info("disconnected", "url", cn.url, "code", closeCode(cause), "reason", reason)
			c.emitState(State{Kind: StateDisconnected, URL: cn.url, Err: reason, CloseCode: closeCode(cause)})
			if stop {
				c.stop(reason)
				return
			}
			if errors.Is(reason, ErrTokenExpired) {
				c.forgetToken()
			}
			cn, attempt = nil, 0
		}
		if !c.sleep(backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff, c.randN)) {
			return
		}
		attempt++
		var err error
		if cn, err = c.connect(c.ctx); err != nil {
			if c.ctx.Err() != nil {
				return
			}
			if reason, stop := c.classify(err); stop {
				c.stop(reason)
				return
			}
		}
	}
}

// finish ends run: it reports the client closed, ends the callback
// goroutine once it has run every callback queued, and marks it done.
func (c *Client) finish() {
	c.cancel()
	c.emitState(State{Kind: StateClosed, Err: c.Err()})
	close(c.events) // every sender has ended: run is the last
	close(c.done)
}

// sleep waits d, or until the client stops (then it returns false).
func (c *Client) sleep(d time.Duration) bool { return sleepCtx(c.ctx, d) }

// sleepCtx waits d, or until ctx ends (then it returns false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// serve makes cn the connection requests go to, until it ends or the
// client stops, and returns why it ended once its goroutines are done.
func (c *Client) serve(cn *conn) error {
	c.mu.Lock()
	if cn.ctx.Err() == nil {
		c.cur = cn
		close(c.ready)
	}
	c.mu.Unlock()
	select {
	case <-cn.ctx.Done():
	case <-c.ctx.Done():
		cn.close(ErrClosed)
	}
	cn.wait()
	return context.Cause(cn.ctx)
}

// connect opens a connection to the next URL, authenticates and replays
// the subscriptions. It reports the attempt to OnState.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	url := c.urls[c.next]
	c.next = (c.next + 1) % len(c.urls)
	c.emitState(State{Kind: StateConnecting, URL: url})
	cn, err := c.open(ctx, url)
	if err != nil {
		reason, _ := c.classify(err)
		c.log.Info("connection attempt failed", "url", url, "err", err)
		c.emitState(State{Kind: StateDisconnected, URL: url, Err: reason, CloseCode: closeCode(err)})
		return nil, err
	}
	return cn, nil
}

func (c *Client) open(ctx context.Context, url string) (*conn, error) {
	ws, resp, err := c.cfg.Dialer.DialContext(ctx, url, c.cfg.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("client: dial %s: %w (HTTP %d)", url, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	cn := newConn(c, ws, url)
	sess, err := c.authenticate(ctx, cn)
	if err == nil {
		cn.setPingInterval(sess.PingInterval)
		c.mu.Lock()
		c.session = sess
		c.mu.Unlock()
		c.log.Info("connected", "url", url, "node", sess.Node, "session", sess.ID)
		c.emitState(State{Kind: StateConnected, URL: url, Session: sess.clone()})
		err = c.resubscribe(ctx, cn)
	}
	if err != nil {
		cn.close(err)
		cn.wait()
		return nil, err
	}
	return cn, nil
}
