package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/dcs"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is one node's hub: it owns the sessions handed to it by a
// transport and the NATS subscriptions they need.
//
// Locks are taken in the one order written down in locksordering.txt, and
// none is held while calling a Transport.
type Server struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *metrics

	sessionLog sessionLog // session starts and ends since the last summary line

	devices   *auth.DeviceVerifier
	tokens    *auth.Tokens
	users     *userStore
	registry  *deviceRegistry
	interest  *registry
	presence  *presence
	dir       *directory // the device directory's election and client
	ctl       *control   // signs and checks node-to-node control messages
	stores    *storeSet
	subs      *subIndex
	coalescer *coalescer
	logLimit  *logLimiter // per-message warnings, node-wide
	services  map[string]service
	admit     *admission    // cost-based admission of expensive requests
	bcrypt    chan struct{} // bounds concurrent bcrypt work
	dummyHash string        // checked for unknown users; same cost as real hashes
	logins    *loginLimiter // login failure throttling
	svc       *svcReplies   // replies to hub.svc requests (svcreply.go)
	// layout names the stores the node writes and reads (see
	// schema.Layout). Written by Start before anything uses it; read-only
	// once Start has succeeded.
	layout schema.Layout
	// dcEngine is the data centre engine of data-centre mode (dcwire.go),
	// set by Start.
	dcEngine atomic.Pointer[dcs.Engine]

	started   atomic.Bool
	stopping  atomic.Bool
	takeover  *nats.Subscription
	runCtx    context.Context // ends at Shutdown
	cancelRun context.CancelFunc
	prevErrCB nats.ErrHandler // the connection's own async error handler

	// The metrics of the directory outlive a directory (a Start tried
	// again opens a new one).
	dirMetrics dirMetrics
	closed     atomic.Bool // Shutdown was called: no Start any more
	// startMu is held by Start while it runs: Shutdown waits for a Start
	// it has cancelled (startCancel) to have undone itself.
	startMu     sync.Mutex
	startCancel context.CancelFunc // of the running Start. Guarded by mu.
	attempted   bool               // a Start has run before. Guarded by startMu.

	taskMu      sync.Mutex
	tasks       sync.WaitGroup // async requests and watchers; Add under taskMu
	tasksClosed bool           // Shutdown has begun: no new task. Guarded by taskMu.

	auths authPool // serves device and token auth requests

	mu       sync.Mutex
	sessions map[*Session]struct{} // Guarded by mu.
}

// New checks cfg and builds a Server. Start connects it to its buckets and
// subjects.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	js, err := newJetStream(cfg.Conn, cfg.JSDomain)
	if err != nil {
		return nil, fmt.Errorf("hub: jetstream: %w", err)
	}
	tokens, err := auth.NewTokens(auth.TokenConfig{Key: auth.TokenKey(cfg.MasterSecret), TTL: cfg.TokenTTL, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("hub: tokens: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		nc:       cfg.Conn,
		js:       js,
		log:      cfg.Logger.With("node", cfg.NodeID),
		metrics:  newMetrics(cfg.Registerer),
		tokens:   tokens,
		sessions: make(map[*Session]struct{}),
		bcrypt:   make(chan struct{}, 2),
		logins:   newLoginLimiter(cfg.Now),
		svc:      newSvcReplies(),
		ctl:      newControl(cfg.MasterSecret, cfg.Registerer),
		auths:    newAuthPool(),
	}
	if s.dummyHash, err = auth.HashPassword(nuid.Next(), cfg.BcryptCost); err != nil {
		return nil, fmt.Errorf("hub: BcryptCost: %w", err)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "fleethub", Name: "nats_connected", Help: "1 while the node is connected to NATS, else 0.",
		}, func() float64 {
			if cfg.Conn.IsConnected() {
				return 1
			}
			return 0
		}))
	}
	s.interest = newRegistry(s)
	s.stores = newStoreSet(s)
	s.subs = newSubIndex(s.metrics)
	s.coalescer = newCoalescer(s)
	s.logLimit = newLogLimiter(time.Second)
	for _, reason := range dropReasons {
		s.metrics.pushesDropped.WithLabelValues(reason)
	}
	s.metrics.authFailures.WithLabelValues("throttled")
	s.dirMetrics = newDirMetrics(cfg.Registerer)
	s.services = s.builtinServices()
	s.admit = newAdmission(&s.cfg, s.metrics)
	return s, nil
}

// NodeID is this node's name.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Start creates (or opens) the hub's JetStream buckets, loads the user store
// and device registry, bootstraps the admin user and subscribes to the
// node-wide subjects. It returns once the node can serve. A Start that
// fails leaves nothing running: what it started is stopped and waited for,
// and Start may be called again (a node waiting for JetStream tries until
// it succeeds). Each JetStream call has its own timeout; ctx bounds the
// whole. Shutdown cancels a Start that runs, and after it Start returns
// ErrStopped.
func (s *Server) Start(ctx context.Context) (err error) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.closed.Load() {
		return ErrStopped
	}
	if s.started.Load() {
		return errors.New("hub: already started")
	}
	ctx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	s.mu.Lock()
	s.startCancel = cancelStart
	s.mu.Unlock()
	if s.closed.Load() { // checked after startCancel is set: see Shutdown
		return ErrStopped
	}
	if s.attempted {
		s.resetStart()
	}
	s.attempted = true
	runCtx, cancel := context.WithCancel(context.Background()) // the root of the node's own lifetime
	s.runCtx, s.cancelRun = runCtx, cancel
	s.prevErrCB = s.nc.Opts.AsyncErrorCB
	s.nc.SetErrorHandler(s.onAsyncError)
	defer func() {
		if err != nil {
			s.abortStart()
		}
	}()
	// JetStream first: while it does not answer (no meta leader yet, or
	// the server not joined), /readyz names it.
	info, err := jscreate.Wait(ctx, s.js.AccountInfo)
	s.stores.jsDown.Store(err != nil)
	if err != nil {
		return fmt.Errorf("hub: jetstream: %w", err)
	}
	if s.layout, err = resolveLayout(s.cfg, s.nc.ConnectedClusterName(), info.Domain); err != nil {
		return err
	}
	nonces, err := newNonceStore(ctx, s, nonceWindow(s.cfg))
	if err != nil {
		return err
	}
	s.devices, err = auth.NewDeviceVerifier(auth.DeviceConfig{
		MasterSecret: s.cfg.MasterSecret, MaxSkew: s.cfg.MaxSkew, Nonces: nonces, Now: s.cfg.Now,
	})
	if err != nil {
		return fmt.Errorf("hub: device verifier: %w", err)
	}
	if s.users, err = openUserStore(ctx, runCtx, s); err != nil {
		return err
	}
	if err := s.users.bootstrap(ctx, s.cfg.AdminPassword); err != nil {
		return err
	}
	if s.registry, err = openDeviceRegistry(ctx, runCtx, s); err != nil {
		return err
	}
	s.interest.start()
	if s.presence, err = openPresence(ctx, runCtx, s); err != nil {
		return err
	}
	if err := openDataStreams(ctx, s); err != nil {
		return err
	}
	if err := s.followStreams(ctx, runCtx); err != nil {
		return err
	}
	// The aggregates after the own stores they source: a source whose
	// stream does not exist yet backs off for seconds to minutes.
	if err := s.openViews(ctx, runCtx); err != nil {
		return err
	}
	if err := nonces.openSeen(ctx, s); err != nil {
		return err
	}
	if s.dir, err = openDirectory(ctx, s); err != nil {
		return err
	}
	// The engine after the directory, which it asks to follow anew when a
	// data centre comes back.
	if err := s.startDCEngine(ctx, runCtx); err != nil {
		return err
	}
	// The first term's index loads before the node serves, for at most
	// feedLoadTimeout; its loading goes on past that (see first).
	dctx, dcancel := context.WithTimeout(ctx, feedLoadTimeout)
	dirTerm := s.dir.first(dctx, runCtx)
	dcancel()
	s.goTask(func() { s.dir.run(runCtx, dirTerm) })
	s.goTask(func() { s.summaries(runCtx) })
	s.goTask(func() { s.logSessions(runCtx) })
	s.goTask(func() { s.stores.run(runCtx) })
	s.goTask(func() { s.logins.run(runCtx) })
	if s.takeover, err = s.nc.Subscribe(subjects.Takeover, s.onTakeover); err != nil {
		return fmt.Errorf("hub: subscribe %s: %w", subjects.Takeover, err)
	}
	if err := s.svc.open(s.nc); err != nil {
		return fmt.Errorf("hub: subscribe service replies: %w", err)
	}
	fctx, fcancel := context.WithTimeout(ctx, jscreate.CallTimeout)
	err = s.nc.FlushWithContext(fctx)
	fcancel()
	if err != nil {
		return fmt.Errorf("hub: flush: %w", err)
	}
	s.started.Store(true)
	s.logLayout()
	s.log.Info("hub started", "users", s.users.len(), "registered_devices", s.registry.len())
	return nil
}

// abortStart undoes a Start that failed: it ends the run context (watchers,
// upkeep), stops dispatch, and waits for every task.
func (s *Server) abortStart() {
	s.stopping.Store(true)
	if s.takeover != nil {
		_ = s.takeover.Unsubscribe()
	}
	s.svc.close()
	s.cancelRun()
	s.interest.stop()
	s.closeTasks()
	s.tasks.Wait()
	s.nc.SetErrorHandler(s.prevErrCB)
}

// resetStart readies a Server whose Start failed for another one: what
// abortStart stopped for good (the dispatch workers, the task spawner, the
// list of stores) is made anew. Called with startMu held, when nothing of
// the failed Start runs any more.
func (s *Server) resetStart() {
	s.stopping.Store(false)
	s.taskMu.Lock()
	s.tasksClosed = false
	s.taskMu.Unlock()
	s.interest = newRegistry(s)
	s.stores.reset()
	s.takeover, s.presence, s.dir = nil, nil, nil
	s.dcEngine.Store(nil)
}

// onAsyncError counts what nats.go dropped for a subscription of the hub,
// then hands the error to the connection's own handler.
func (s *Server) onAsyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) {
		s.interest.onSlowConsumer(sub)
	}
	if s.prevErrCB != nil {
		s.prevErrCB(nc, sub, err)
	}
}

// Ready reports whether the node can serve: started, not stopping, and
// connected to NATS.
func (s *Server) Ready() bool {
	return s.started.Load() && !s.stopping.Load() && s.nc.IsConnected()
}

// Open registers a new connection. The transport must then feed the
// session's frames to HandleFrame and report its end with Gone.
func (s *Server) Open(t Transport, remoteAddr string) *Session {
	sess := newSession(s, t, remoteAddr)
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	s.metrics.connections.Inc()
	return sess
}

func (s *Server) forget(sess *Session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// CloseAll closes every session with code and reason and waits, until ctx
// ends, for the transport to report them gone.
func (s *Server) CloseAll(ctx context.Context, code int, reason string) error {
	s.mu.Lock()
	all := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.Close(code, reason)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.sessions)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub: %d sessions still open: %w", n, ctx.Err())
		case <-tick.C:
		}
	}
}

// SessionCount is the number of open sessions on this node.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown stops the hub. It is idempotent. The order matters:
//  1. mark not ready, so the transport refuses new connections;
//  2. close every session with 1012 so clients reconnect elsewhere, and
//     wait for them (bounded by ctx);
//  3. stop presence upkeep and remove the liveness entry: the other nodes
//     give the devices their grace, and report those that do not return;
//  4. stop the watchers and dispatch workers and wait for async requests.
//
// From its first step no new task starts (goTask refuses). The NATS
// connection belongs to the caller, who drains it afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	// A Start that runs is cancelled, and undoes itself before the rest:
	// closed is set before startCancel is read, and Start reads closed
	// after setting startCancel, so one of the two sees the other.
	s.mu.Lock()
	if s.startCancel != nil {
		s.startCancel()
	}
	s.mu.Unlock()
	s.startMu.Lock()
	defer s.startMu.Unlock()
	s.stopping.Store(true)
	s.closeTasks()
	if !s.started.Load() {
		// No Start succeeded: nothing runs (a failed one undid itself).
		return s.CloseAll(ctx, wire.CloseRestart, "node restarting")
	}
	err := s.CloseAll(ctx, wire.CloseRestart, "node restarting")
	if s.presence != nil {
		s.presence.stop(ctx)
	}
	if s.takeover != nil {
		_ = s.takeover.Unsubscribe()
	}
	s.svc.close()
	if s.cancelRun != nil {
		s.cancelRun() // ends watchers and requests still waiting on the bus
	}
	s.interest.stop()
	done := make(chan struct{})
	go func() { s.tasks.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	if s.cancelRun != nil {
		s.nc.SetErrorHandler(s.prevErrCB)
	}
	s.log.Info("hub stopped")
	return err
}

// goTask runs f on a goroutine that Shutdown waits for, and reports
// whether it did: once Shutdown has begun it refuses new work, so that
// nothing starts that Shutdown would not wait for.
func (s *Server) goTask(f func()) bool {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	if s.tasksClosed {
		return false
	}
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		f()
	}()
	return true
}

// closeTasks makes goTask refuse new work.
func (s *Server) closeTasks() {
	s.taskMu.Lock()
	s.tasksClosed = true
	s.taskMu.Unlock()
}
