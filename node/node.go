package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// Node serves a hub over HTTP and WebSocket.
type Node struct {
	cfg     Config
	hub     *hub.Server
	log     *slog.Logger
	melody  *melody.Melody
	handler http.Handler
	certs   *certLoader    // nil without TLS
	unauth  *unauthLimiter // caps on unauthenticated connections (limits.go)
	frames  *frameWorkers  // handle received frames off the read goroutines (frames.go)
	pinger  *pinger        // pings every session (pinger.go)
	// doneRequest stands for every session's upgrade request once the
	// session is open (HandleConnect). Only read.
	doneRequest *http.Request

	stopping atomic.Bool
	stopOnce sync.Once
	stopErr  error
	httpSrv  *http.Server

	// The sessions' flushers (writer.go), started by goWriter until
	// Shutdown stops and waits for them.
	writersMu      sync.Mutex
	writersStopped bool // Guarded by writersMu.
	writers        sync.WaitGroup

	epoch time.Time     // monoNow counts from it
	burst time.Duration // burstWindow; tests set 0 to give every frame a write of its own
}

// New builds a Node for a hub, started or not yet: until the hub has
// started, /readyz and /healthz answer 503 (naming "serving") and /ws
// refuses upgrades with 503, so that a node can serve HTTP while its hub
// waits for NATS and JetStream.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	n := &Node{cfg: cfg, hub: cfg.Hub, log: cfg.Logger.With("node", cfg.Hub.NodeID()), epoch: time.Now(), burst: burstWindow, frames: newFrameWorkers(), pinger: newPinger(cfg.PingInterval), doneRequest: &http.Request{}}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("node: metrics: %w", err)
	}
	n.unauth = newUnauthLimiter(cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerIP, met)
	if cfg.TLSCertFile != "" {
		certs, err := newCertLoader(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.Registerer, n.log)
		if err != nil {
			return nil, err
		}
		n.certs = certs
	}

	m := melody.New()
	// The node's pinger pings (pinger.go): melody's own ticker is set out
	// of the way, so that its writer goroutine writes only the close.
	m.Config.PingPeriod = neverPing
	m.Config.PongWait = cfg.PongWait
	m.Config.WriteWait = cfg.WriteWait
	m.Config.MaxMessageSize = cfg.MaxMessageBytes
	// Data frames do not go through melody's queue (wsConn writes them,
	// writer.go): it holds only closes.
	m.Config.MessageBufferSize = 4
	m.Upgrader = &websocket.Upgrader{
		// The smallest read buffer gorilla takes (a control frame's
		// payload must fit), and write buffers taken from a pool only
		// while a frame is written: an idle connection holds 128 bytes.
		// A data frame larger than the buffer is read straight into the
		// message, so a small one costs at most one more read(2) per
		// frame, and clients send few frames.
		ReadBufferSize:  128,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     newOriginChecker(cfg.AllowedOrigins, cfg.Listen).check,
	}
	m.HandleConnect(func(s *melody.Session) {
		c := connOf(s)
		c.ms = s
		// melody keeps the upgrade request for the session's life. Nothing
		// uses it once the upgrade is done: one empty request shared by
		// all sessions takes its place, and lets it go with its headers.
		// (Before melody starts the session's writer, and before Open:
		// the hub's lock then orders it before any use of the session
		// that the hub makes.)
		s.Request = n.doneRequest
		c.hs = n.hub.Open(c, c.raw.RemoteAddr().String())
		n.pinger.add(c)
	})
	m.HandleMessage(func(s *melody.Session, msg []byte) {
		c := connOf(s)
		c.alive()
		n.frames.handle(c, msg, false)
	})
	m.HandleMessageBinary(func(s *melody.Session, _ []byte) {
		c := connOf(s)
		c.alive()
		n.frames.handle(c, nil, true)
	})
	m.HandleError(func(s *melody.Session, err error) { connOf(s).onError(err) })
	m.HandleDisconnect(func(s *melody.Session) {
		c := connOf(s)
		n.pinger.remove(c)
		c.hs.Gone(c.reason())
	})
	n.melody = m
	n.handler = n.routes()
	return n, nil
}

// neverPing is melody's PingPeriod: longer than any process lives.
const neverPing = 100 * 365 * 24 * time.Hour

// connOf is the wsConn of a melody session, which its remote address
// leads to (sessionAddr): one type assertion.
func connOf(s *melody.Session) *wsConn {
	return (*wsConn)(s.RemoteAddr().(*sessionAddr))
}

// monoNow is the time on the monotonic clock, in nanoseconds since New.
func (n *Node) monoNow() int64 { return int64(time.Since(n.epoch)) }

// goWriter runs f, a session's flusher, on a goroutine of its own that
// Shutdown waits for. It reports false, running nothing, once Shutdown
// has begun waiting.
func (n *Node) goWriter(f func()) bool {
	n.writersMu.Lock()
	defer n.writersMu.Unlock()
	if n.writersStopped {
		return false
	}
	n.writers.Add(1)
	go func() {
		defer n.writers.Done()
		f()
	}()
	return true
}

// stopWriters refuses new flushers and waits for the running ones, until
// ctx ends. Each ends within WriteWait at most: its every write has that
// deadline, and a write to a closed socket fails at once.
func (n *Node) stopWriters(ctx context.Context) error {
	n.writersMu.Lock()
	n.writersStopped = true
	n.writersMu.Unlock()
	if err := waitGroup(ctx, &n.writers); err != nil {
		return fmt.Errorf("node: session writers still running: %w", err)
	}
	return nil
}

// Handler is the node's HTTP handler (for tests under httptest).
func (n *Node) Handler() http.Handler { return n.handler }

// serveWS upgrades GET /ws. The session then runs on a goroutine of its
// own and the HTTP handler returns: net/http keeps its per-connection read
// and write buffers (about 10 KiB) and the request for as long as a handler
// runs, so a session served inside the handler would hold them for life.
func (n *Node) serveWS(w http.ResponseWriter, r *http.Request) {
	if n.stopping.Load() || !n.hub.Ready() {
		http.Error(w, "node is not ready", http.StatusServiceUnavailable)
		return
	}
	ip := remoteIP(r)
	if reason := n.unauth.acquire(ip); reason != "" {
		n.log.Debug("upgrade refused: unauthenticated connections over the cap", "remote", r.RemoteAddr, "reason", reason)
		refuseOverCap(w, reason)
		return
	}
	c := newWSConn(n, ip)
	upgraded := c.upgraded
	go n.runSession(c, w, r, r.RemoteAddr, r.Header.Get("Origin"))
	<-upgraded // hijacked, and w not used again; or refused and answered through w
}

// runSession upgrades the request and runs the session until it ends, on
// the goroutine that serveWS starts. w and r are not used once the
// upgrade is done, so that the session holds neither (remote and origin
// are for the log of a refused upgrade).
func (n *Node) runSession(c *wsConn, w http.ResponseWriter, r *http.Request, remote, origin string) {
	// HandleRequest returns when the session has ended (or the upgrade
	// was refused): its slot goes back then, unless authentication gave
	// it back already.
	defer c.releaseUnauth()
	err := n.melody.HandleRequest(&hijackCapture{ResponseWriter: w, conn: c}, r)
	if c.upgraded != nil {
		close(c.upgraded) // refused before the hijack
		c.upgraded = nil
	}
	if err != nil {
		// The upgrader has already answered (403 for a refused origin).
		n.log.Debug("upgrade refused", "remote", remote, "origin", origin, "err", err)
	}
}

// Run serves on cfg.Listen until ctx ends, then shuts down.
func (n *Node) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return fmt.Errorf("node: listen %s: %w", n.cfg.Listen, err)
	}
	return n.Serve(ctx, ln)
}

// shutdownTimeout bounds Serve's shutdown once its context has ended.
const shutdownTimeout = 10 * time.Second

// Serve serves on ln until ctx ends, then shuts down. With a TLS
// certificate configured, it serves HTTPS and WSS only.
func (n *Node) Serve(ctx context.Context, ln net.Listener) error {
	ln, stopTLS := n.serveTLS(ctx, ln)
	defer stopTLS()
	n.httpSrv = n.newHTTPServer()
	errc := make(chan error, 1)
	go func() { errc <- n.httpSrv.Serve(ln) }()
	n.log.Info("serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("node: serve: %w", err)
	case <-ctx.Done():
	}
	// ctx has ended; the shutdown gets its own bounded time.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := n.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// Shutdown stops the node; it is idempotent. In order:
//  1. mark not ready: /readyz and /healthz answer 503 and /ws refuses
//     upgrades;
//  2. the hub closes every session with 1012 (reconnect elsewhere) and
//     waits for them to end;
//  3. http.Server.Shutdown, which does not wait for hijacked connections
//     (step 2 already did);
//  4. melody is closed;
//  5. the pinger stops;
//  6. the sessions' flushers are waited for;
//  7. the frame workers, idle once the sessions have ended, stop.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.stopping.Store(true)
		err := n.hub.Shutdown(ctx)
		if n.httpSrv != nil {
			err = errors.Join(err, n.httpSrv.Shutdown(ctx))
		}
		if !n.melody.IsClosed() {
			_ = n.melody.CloseWithMsg(websocket.FormatCloseMessage(wire.CloseRestart, "node restarting"))
		}
		n.pinger.stop()
		err = errors.Join(err, n.stopWriters(ctx))
		if ferr := n.frames.stop(ctx); ferr != nil {
			err = errors.Join(err, fmt.Errorf("node: frame workers: %w", ferr))
		}
		n.stopErr = err
	})
	return n.stopErr
}
