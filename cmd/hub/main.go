// Command hub runs one node of the push hub: WebSocket sessions for devices
// and admins, routed over NATS. With no --nats-url it starts an embedded
// nats-server with JetStream, so one command runs the whole system.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/cli"
	"github.com/fleethub/fleethub/internal/embedded"
	"github.com/fleethub/fleethub/internal/memtrim"
	"github.com/fleethub/fleethub/internal/natsconn"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/node/dashboard"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// devMasterSecret is the fixed secret of --dev mode. It is public, so a
// node started with it must never face a real network.
const devMasterSecret = "fleethub-dev-master-secret-do-not-use-in-production"

type options struct {
	listen, natsListen, natsConf, dataDir, nodeID      string
	masterSecret, adminPassword, allowedOrigins        string
	logFormat, logLevel                                string
	dc, jsDomain                                       string
	pingInterval, pongWait, authTimeout, tokenTTL      time.Duration
	serviceTimeout, presenceTTL, nodeTTL, offlineGrace time.Duration
	summaryInterval, recordAge, coalesceWindow         time.Duration
	statusHistory, eventHistory                        int
	maxMessageBytes                                    int64
	queueBytes, replicas                               int
	requireRegistered, dev, pprof                      bool

	// The connection to NATS and the secret files (natsconn.go).
	nats                                natsconn.Config
	masterSecretFile, adminPasswordFile string
	// natsAuth are the credentials and TLS options of nats, for the
	// connection to an external NATS (--nats-url).
	natsAuth []nats.Option
	// natsCreds are natsAuth's credentials alone, for the in-process
	// connection to the embedded server.
	natsCreds []nats.Option
	// natsAccount is the hub's account in --nats-conf (embedded server).
	natsAccount string
	// TLS on the WebSocket edge (tls.go).
	tls tlsOptions
	// Limits on the HTTP edge (edge.go).
	edge edgeOptions
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var o options
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "HTTP/WebSocket address")
	fs.StringVar(&o.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server")
	fs.StringVar(&o.natsConf, "nats-conf", "", "nats-server config file for the embedded server")
	fs.StringVar(&o.dataDir, "data-dir", "./data", "where the embedded server keeps JetStream data")
	fs.StringVar(&o.nodeID, "node-id", "", "this node's name (default host name + port)")
	fs.StringVar(&o.masterSecret, "master-secret", "", "the secret device keys derive from (required outside --dev)")
	fs.StringVar(&o.adminPassword, "admin-password", "", "password of the admin user created when the user store is empty (default generated and logged once)")
	fs.DurationVar(&o.pingInterval, "ping-interval", 10*time.Second, "WebSocket ping interval")
	fs.DurationVar(&o.pongWait, "pong-wait", 15*time.Second, "how long a silent client is kept")
	fs.DurationVar(&o.presenceTTL, "presence-ttl", 2*time.Minute, "how long a device's presence entry lives without a refresh")
	fs.DurationVar(&o.nodeTTL, "node-ttl", 5*time.Second, "how long a node's liveness entry lives without a refresh")
	fs.DurationVar(&o.offlineGrace, "offline-grace", 5*time.Second, "how long a disconnected device may take to come back")
	fs.DurationVar(&o.authTimeout, "auth-timeout", 5*time.Second, "time allowed for the first (auth) message")
	fs.Int64Var(&o.maxMessageBytes, "max-message-bytes", 65536, "largest frame accepted")
	fs.StringVar(&o.allowedOrigins, "allowed-origins", "", "browser origins allowed besides same-origin, comma-separated (when set, same-origin holds only under an IP or localhost Host)")
	fs.BoolVar(&o.requireRegistered, "require-registered", false, "refuse devices missing from hub_devices")
	fs.DurationVar(&o.summaryInterval, "summary-interval", 5*time.Second, "period of /push/summary")
	fs.IntVar(&o.statusHistory, "status-history", 100, "status records HUB_STATUS keeps per device")
	fs.IntVar(&o.eventHistory, "event-history", 1000, "event records HUB_EVENTS keeps per device")
	fs.DurationVar(&o.recordAge, "record-age", 7*24*time.Hour, "how long status and event records are kept")
	fs.DurationVar(&o.coalesceWindow, "coalesce-window", 250*time.Millisecond, "shortest time between two status pushes about one device")
	fs.BoolVar(&o.dev, "dev", false, "development mode: fixed master secret and admin password 'admin'; never for production")
	fs.DurationVar(&o.tokenTTL, "token-ttl", 24*time.Hour, "lifetime of admin tokens")
	fs.DurationVar(&o.serviceTimeout, "service-timeout", 5*time.Second, "how long a backend service on hub.svc.* may take")
	fs.IntVar(&o.queueBytes, "queue-bytes", 1<<20, "outbound queue per session, in bytes; overflow closes with 4008")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas (1 to 5) of the hub's JetStream buckets and streams (for a NATS cluster)")
	fs.StringVar(&o.dc, "dc", "", "this node's data centre, a subject token (default the name of the NATS cluster its connection reaches)")
	fs.StringVar(&o.jsDomain, "js-domain", "", "the JetStream domain the node's buckets and streams live in (leaf-node sites)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ (profiling; keep it off on an untrusted network)")
	// Limits on the HTTP edge (edge.go).
	fs.DurationVar(&o.edge.readTimeout, "read-timeout", 15*time.Second, "longest time to read one HTTP request, body included (WebSocket sessions are not affected); 0 for none")
	fs.DurationVar(&o.edge.idleTimeout, "idle-timeout", 120*time.Second, "how long an idle keep-alive HTTP connection is kept; 0 for no limit")
	fs.IntVar(&o.edge.maxUnauth, "max-unauthenticated", 10000, "WebSocket connections not yet authenticated, at most; over it upgrades get 503; 0 for no cap")
	fs.IntVar(&o.edge.maxUnauthPerIP, "max-unauthenticated-per-ip", 1000, "WebSocket connections not yet authenticated from one remote IP, at most; 0 for no cap")
	fs.BoolVar(&o.edge.allowDevOnNetwork, "allow-dev-on-network", false, "let --dev run on a non-loopback --listen (anyone who reaches it is admin)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	// The embedded server, secured.
	fs.StringVar(&o.natsAccount, "nats-account", "", "account of --nats-conf the node's own NATS user joins (default: the only one with JetStream)")
	// Credentials and TLS to NATS (--nats-url, --nats-creds, ...), and the
	// secrets read from files.
	o.registerNATSConn(fs)
	// TLS on the WebSocket edge (tls.go).
	fs.StringVar(&o.tls.cert, "tls-cert", "", "PEM certificate file: serve HTTPS and WSS only on --listen (with --tls-key); re-read when it changes")
	fs.StringVar(&o.tls.key, "tls-key", "", "PEM private key file of --tls-cert; re-read when it changes")
	showVersion := fs.Bool("version", false, "print the version on standard output and exit")
	showConfig := fs.Bool("print-config", false, "print the effective configuration (secrets redacted) on standard output and exit")
	if code, ok := cli.ParseFlags("hub", fs, args, cli.Env, os.Stderr); !ok {
		return code
	}
	if *showVersion {
		fmt.Println("hub", cli.Version())
		return 0
	}
	log, err := newLogger(o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		return 2
	}
	if err := o.loadNATSConn(); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		return 2
	}
	if o.replicas < 1 || o.replicas > 5 {
		fmt.Fprintf(os.Stderr, "hub: --replicas %d: want 1 to 5 (a bucket or stream of a NATS cluster has 1 to 5 replicas)\n", o.replicas)
		return 2
	}
	for _, f := range []struct{ name, value string }{{"dc", o.dc}, {"js-domain", o.jsDomain}} {
		if f.value != "" && !subjects.ValidToken(f.value) {
			fmt.Fprintf(os.Stderr, "hub: --%s %q: want a subject token (letters, digits, '-' or '_'; no '.', '*', '>' or space)\n", f.name, f.value)
			return 2
		}
	}
	if err := o.tls.check(); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		return 2
	}
	if err := checkDevListen(o.dev, o.listen, o.edge.allowDevOnNetwork, log); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		return 2
	}
	if o.dev {
		log.Warn("DEVELOPMENT MODE: the master secret is public and the admin password is 'admin'. Never run --dev on a network you do not control.",
			"master_secret", devMasterSecret)
		if o.masterSecret == "" {
			o.masterSecret = devMasterSecret
		}
		if o.adminPassword == "" {
			o.adminPassword = "admin"
		}
	}
	if o.masterSecret == "" {
		fmt.Fprintln(os.Stderr, "hub: --master-secret-file (or HUB_MASTER_SECRET, --master-secret) is required outside --dev")
		return 2
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		return 2
	}
	if err := checkEmbeddedFlags(o); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		return 2
	}
	if o.nodeID == "" {
		o.nodeID = defaultNodeID(o.listen)
	}
	if *showConfig {
		printConfig(os.Stdout, fs)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o, log); err != nil {
		if line, ok := refusal(err); ok {
			fmt.Fprintln(os.Stderr, line)
			return 2
		}
		log.Error("hub stopped with an error", "err", err)
		return 1
	}
	return 0
}

// serve runs the node until ctx ends. The HTTP listener comes first
// (/livez 200, /readyz 503, WebSocket upgrades 503); the connection to
// NATS is retried, with back-off, from the start; the hub's start is
// retried, with back-off, until it succeeds (lifecycle.go). So a node
// started before NATS or JetStream can serve waits instead of exiting,
// and SIGTERM ends it at any point.
func serve(ctx context.Context, o options, log *slog.Logger) error {
	var ns *embedded.Server
	var err error
	if o.nats.URL == "" {
		ns, err = startEmbedded(ctx, o, log)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		log.Info("embedded NATS server started", "client_url", ns.ClientURL(), "data_dir", o.dataDir, "account", ns.Account())
	} else {
		log.Info("connecting to NATS", "url", natsconn.Redact(o.nats.URL), "auth", o.nats.Auth(), "tls", o.nats.TLS())
	}
	nc, err := connectNATS(o, ns, log)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer drain(nc, log)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), cli.BuildInfo())
	// Memory a burst (a reconnect storm) left goes back to the system
	// once the node is quiet (internal/memtrim).
	trimCtx, stopTrim := context.WithCancel(ctx)
	trimDone := make(chan struct{})
	go func() {
		defer close(trimDone)
		memtrim.Run(trimCtx, memtrim.Config{Registerer: reg, Logger: log})
	}()
	defer func() {
		stopTrim()
		<-trimDone
	}()
	srv, err := hub.New(hub.Config{
		Conn: nc, NodeID: o.nodeID, MasterSecret: []byte(o.masterSecret), AdminPassword: o.adminPassword,
		RequireRegistered: o.requireRegistered, PingInterval: o.pingInterval, AuthTimeout: o.authTimeout,
		TokenTTL: o.tokenTTL, ServiceTimeout: o.serviceTimeout, Replicas: o.replicas,
		DC: o.dc, JSDomain: o.jsDomain,
		PresenceTTL: o.presenceTTL, NodeTTL: o.nodeTTL, OfflineGrace: o.offlineGrace, NodeAddr: o.listen,
		SummaryInterval: o.summaryInterval, StatusHistory: o.statusHistory, EventHistory: o.eventHistory,
		RecordAge: o.recordAge, CoalesceWindow: o.coalesceWindow,
		Logger: log, Registerer: reg, JetStreamCheck: jetStreamCheck(ns),
	})
	if err != nil {
		return err
	}
	var origins []string
	for _, o := range strings.Split(o.allowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	ncfg := node.Config{
		Hub: srv, Listen: o.listen, PingInterval: o.pingInterval, PongWait: o.pongWait,
		MaxMessageBytes: o.maxMessageBytes, QueueBytes: o.queueBytes, AllowedOrigins: origins,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Debug: o.pprof, Logger: log,
		Dashboard: dashboard.Handler(), Registerer: reg,
		TLSCertFile: o.tls.cert, TLSKeyFile: o.tls.key,
	}
	o.edge.apply(&ncfg)
	n, err := node.New(ncfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.listen, err)
	}
	// The node serves until ctx ends (then shuts the hub down), or until
	// serving fails, which ends the start too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- n.Serve(ctx, ln)
		cancel()
	}()
	if startHub(ctx, srv, log) {
		httpScheme, wsScheme := o.tls.schemes()
		log.Info("node ready", "node", o.nodeID, "ws", wsScheme+"://"+o.listen+"/ws", "health", httpScheme+"://"+o.listen+"/healthz")
		if o.dev {
			log.Info("dev login: user admin, password admin", "dashboard", httpScheme+"://"+o.listen+"/")
		}
	}
	return <-served
}

// drain flushes what the connection still holds and waits, bounded, until
// it is closed: the embedded server must not stop under a draining client.
func drain(nc *nats.Conn, log *slog.Logger) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		log.Warn("NATS drain timed out")
		nc.Close()
	}
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// defaultNodeID is the host name and the listen port, joined with '-' so
// that it is a valid KV key and subject token.
func defaultNodeID(listen string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	host = strings.NewReplacer(".", "-", ":", "-", " ", "-").Replace(host)
	if _, port, err := net.SplitHostPort(listen); err == nil {
		return host + "-" + port
	}
	return host
}
