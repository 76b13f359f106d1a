// Package embedded starts the NATS server a node runs in its own process
// when it is given no NATS URL (hub --dev). It lives outside hub so that
// the hub core depends on a NATS client only, never on nats-server.
//
//	ns, err := embedded.Start(ctx, embedded.Config{Listen: "127.0.0.1:4222", DataDir: "./data"})
//	if err != nil { ... }
//	defer ns.Shutdown()
//	nc, err := nats.Connect("", ns.ConnOptions()...)
//
// The server is secured by its conf file: with users (an authorization or
// accounts block) the node adds a user of its own for its in-process
// connection, and Start refuses a server that would let clients in
// without credentials off loopback (see CheckExposure).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures the NATS server a node starts when it is given no NATS
// URL.
type Config struct {
	// Listen is the client address, so that backends and other nodes can
	// join. Default 127.0.0.1:4222; port -1 picks a free one.
	Listen string
	// ConfFile is an optional nats-server configuration file. Its listen
	// address and JetStream store directory, when set, win over Listen and
	// DataDir.
	ConfFile string
	// DataDir is where JetStream keeps its data. Default ./data.
	DataDir string
	// Account is the account of ConfFile the node's own user joins
	// (--nats-account). Empty picks the only one, besides the system
	// account, with JetStream enabled; GlobalAccount keeps the global one.
	Account string
	// Credentials authenticate the in-process connection instead of the
	// user the node makes for itself: nats.UserCredentials, nats.Nkey,
	// nats.UserInfo (from --nats-creds, --nats-nkey, --nats-user). They are
	// required when ConfFile trusts an operator (JWT mode). No TLS
	// options: the in-process connection has no TLS.
	Credentials []nats.Option
	// AllowOpen starts the server even when CheckExposure refuses it,
	// with a warning (--dev).
	AllowOpen bool
	// Logger receives the server's notices and errors. Nil discards them.
	Logger *slog.Logger
}

// Server is a running embedded nats-server with what the node's
// in-process connection needs to join it.
type Server struct {
	*server.Server
	auth    []nats.Option
	account string
	ready   readyCache // JetStreamReady's last answer (cluster.go)
}

// ConnOptions are the options of a connection to the server inside this
// process: nats.InProcessServer and the node's credentials. Append them
// after the caller's own options.
func (s *Server) ConnOptions() []nats.Option {
	return append([]nats.Option{nats.InProcessServer(s.Server)}, s.auth...)
}

// Account is the account the node's connection is in: the one Start
// chose, or, with Config.Credentials, the one the server bound them to.
func (s *Server) Account() string { return s.account }

// Start starts a nats-server with JetStream in this process, waits until
// it accepts connections and checks that the node's connection gets
// JetStream (in a cluster, that its account has JetStream: the API needs
// a quorum of servers, which the node's start waits for, not Start). Connect to it with ns.ConnOptions(): no TCP hop between the
// node and its bus. A configuration the node must not run with is a
// *ConfigError, returned before the server starts when it can be.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	opts, listenFlag, err := load(cfg)
	if err != nil {
		return nil, err
	}
	return start(ctx, cfg, opts, listenFlag)
}

// start is Start on options already loaded.
func start(ctx context.Context, cfg Config, opts *server.Options, listenFlag string) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := CheckExposure(opts, listenFlag); err != nil {
		if !cfg.AllowOpen {
			return nil, err
		}
		log.Warn("DEVELOPMENT MODE: the embedded NATS server lets anyone who reaches it in without credentials, and whoever reaches the bus owns the fleet; only --dev allows this",
			"reason", err.Error())
	}
	auth, account, err := identity(opts, cfg)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: nats server: %w", err)
	}
	ns.SetLoggerV2(natsLogger{log.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded: nats server on %s:%d not ready", opts.Host, opts.Port)
	}
	s := &Server{Server: ns, auth: auth, account: account}
	if err := s.probe(ctx, cfg); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}
	return s, nil
}

// load builds the server's options from the conf file and the flags, and
// says which flag the client address came from.
func load(cfg Config) (*server.Options, string, error) {
	opts := &server.Options{}
	listenFlag := FlagListen
	if cfg.ConfFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(cfg.ConfFile); err != nil {
			return nil, "", configErr(FlagConf, fmt.Sprintf("--nats-conf %s: %s", cfg.ConfFile, oneLine(err.Error())))
		}
	}
	switch {
	case opts.Port != 0:
		// The conf's listen address wins; a port alone means every
		// interface, as in nats-server.
		listenFlag = FlagConf
	default:
		listen := cfg.Listen
		if listen == "" {
			listen = "127.0.0.1:4222"
		}
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, "", configErr(FlagListen, fmt.Sprintf("--nats-listen %q: %v", listen, err))
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, "", configErr(FlagListen, fmt.Sprintf("--nats-listen %q: port %q is not a number", listen, port))
		}
		if opts.Host != "" {
			// The conf names the host only: it wins, on the flag's port.
			listenFlag = FlagConf
		} else {
			opts.Host = host
		}
		opts.Port = p
	}
	opts.JetStream = true
	if opts.StoreDir == "" {
		opts.StoreDir = cfg.DataDir
		if opts.StoreDir == "" {
			opts.StoreDir = "./data"
		}
	}
	opts.NoSigs = true
	return opts, listenFlag, nil
}

// probe connects as the node will and asks JetStream for the account's
// limits, so that a conf where the node's account has no JetStream, or
// credentials the server refuses, stop the start with a clear reason
// rather than a failing bucket later.
func (s *Server) probe(ctx context.Context, cfg Config) error {
	nc, err := nats.Connect("", append([]nats.Option{nats.Name("hub-embedded-probe")}, s.ConnOptions()...)...)
	if err != nil {
		if len(cfg.Credentials) > 0 {
			// In process, a refused CONNECT often shows as a closed pipe
			// rather than an authorization error: with credentials
			// given, they are what the server did not take.
			return configErr(FlagCreds, fmt.Sprintf("the embedded NATS server did not accept the node's connection with the credentials given (%s): check --nats-creds, --nats-nkey or --nats-user", oneLine(err.Error())))
		}
		return fmt.Errorf("embedded: in-process connection: %w", err)
	}
	defer nc.Close()
	if s.account == "" {
		// The credentials' user decides the account: ask the server.
		if cid, err := nc.GetClientID(); err == nil {
			if cz, err := s.Connz(&server.ConnzOptions{CID: cid, Username: true}); err == nil && len(cz.Conns) == 1 {
				s.account = cz.Conns[0].Account
				if s.account == "" {
					s.account = GlobalAccount
				}
			}
		}
	}
	if s.JetStreamIsClustered() {
		// A server of a cluster cannot answer JetStream's API alone: it
		// needs a meta leader, which takes peers that may start after
		// this node (or be down while it restarts). The account's
		// JetStream is a local fact, so look at it here; the node's
		// start then waits for the API itself.
		return s.checkAccountJetStream()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("embedded: jetstream: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			acc := s.account
			if acc == "" {
				acc = "of the node's connection"
			}
			return configErr(FlagConf, fmt.Sprintf("the hub's account %s has no JetStream in --nats-conf: enable it there (jetstream: enabled), or pick another with --nats-account", acc))
		}
		return fmt.Errorf("embedded: jetstream in account %s: %w", s.account, err)
	}
	return nil
}

// checkAccountJetStream refuses, as probe does through the API, an
// account of the node's connection without JetStream, looking at the
// server's own state (no request, no quorum needed).
func (s *Server) checkAccountJetStream() error {
	name := s.accountName()
	acc, err := s.LookupAccount(name)
	if err != nil {
		return fmt.Errorf("embedded: account %s: %w", name, err)
	}
	if !acc.JetStreamEnabled() {
		return configErr(FlagConf, fmt.Sprintf("the hub's account %s has no JetStream in --nats-conf: enable it there (jetstream: enabled), or pick another with --nats-account", name))
	}
	return nil
}

// natsLogger routes nats-server's logs to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
