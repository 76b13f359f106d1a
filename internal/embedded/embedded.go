// Package embedded starts the NATS server a node runs in its own process
// when it is given no NATS URL (hub --dev). It lives outside hub so that
// the hub core depends on a NATS client only, never on nats-server.
//
//	ns, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:4222", DataDir: "./data"})
//	if err != nil { ... }
//	defer ns.Shutdown()
//	nc, err := nats.Connect("", nats.InProcessServer(ns))
package embedded

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	// Logger receives the server's notices and errors. Nil discards them.
	Logger *slog.Logger
}

// Start starts a nats-server with JetStream in this process and
// waits until it accepts connections. Connect to it with
// nats.InProcessServer(ns): no TCP hop between the node and its bus.
func Start(cfg Config) (*server.Server, error) {
	opts := &server.Options{}
	if cfg.ConfFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(cfg.ConfFile); err != nil {
			return nil, fmt.Errorf("embedded: nats config %s: %w", cfg.ConfFile, err)
		}
	}
	if opts.Port == 0 {
		listen := cfg.Listen
		if listen == "" {
			listen = "127.0.0.1:4222"
		}
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("embedded: nats listen %q: %w", listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded: nats listen port %q: %w", port, err)
		}
		opts.Host, opts.Port = host, p
	}
	opts.JetStream = true
	if opts.StoreDir == "" {
		opts.StoreDir = cfg.DataDir
		if opts.StoreDir == "" {
			opts.StoreDir = "./data"
		}
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: nats server: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns.SetLoggerV2(natsLogger{log.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded: nats server on %s:%d not ready", opts.Host, opts.Port)
	}
	return ns, nil
}

// natsLogger routes nats-server's logs to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
