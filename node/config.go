package node

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Node. Zero values get the defaults on each field.
type Config struct {
	// Hub is the started hub the node serves. Required.
	Hub *hub.Server
	// Listen is the HTTP/WebSocket address. Default 127.0.0.1:8080.
	Listen string
	// PingInterval is how often the server pings each client. Default 10s.
	PingInterval time.Duration
	// PongWait is how long a client may stay silent (no pong, no message)
	// before it is disconnected. Default 15s.
	PongWait time.Duration
	// WriteWait bounds one frame write. Default 10s.
	WriteWait time.Duration
	// MaxMessageBytes is the largest frame accepted; larger ones close the
	// connection with 1009. Default 65536.
	MaxMessageBytes int64
	// QueueBytes bounds what a session may have waiting to be written. A
	// session whose queue overflows is closed with 4008. Default 1 MiB.
	QueueBytes int
	// AllowedOrigins are the browser origins allowed besides same-origin,
	// each exactly scheme://host[:port]. When set, same-origin holds only
	// under a Host that is an IP literal or localhost; on loopback, only
	// under a loopback Host (origin.go).
	AllowedOrigins []string
	// Metrics serves GET /metrics; nil serves 404 there.
	Metrics http.Handler
	// Debug serves /debug/pprof/ when set (profiling; keep it off on an
	// untrusted network).
	Debug bool
	// Dashboard serves GET /; nil serves a short text page.
	Dashboard http.Handler
	// Logger receives the node's logs. Nil discards them.
	Logger *slog.Logger

	// TLSCertFile and TLSKeyFile are PEM files (--tls-cert, --tls-key):
	// when set, Run and Serve speak HTTPS and WSS only. Both or neither.
	// The pair is loaded by New and reloaded while the node serves when
	// either file changes (see tlscert.go).
	TLSCertFile, TLSKeyFile string
	// Limits on the HTTP edge (limits.go). For each, zero means the
	// default and a negative value means no limit.

	// ReadTimeout bounds reading one HTTP request, body included, so a
	// body sent a byte at a time is cut. A WebSocket session is not
	// affected: the upgrade clears the connection's deadlines. Default 15s.
	ReadTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its
	// next request. Default 120s.
	IdleTimeout time.Duration
	// MaxUnauthenticated caps the WebSocket connections not yet
	// authenticated, over all clients. Upgrades over it are refused with
	// 503 and Retry-After. Default 10000.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerIP is the same cap per remote IP address (the
	// TCP peer's; X-Forwarded-For is not trusted). Default 1000.
	MaxUnauthenticatedPerIP int
	// Registerer receives the node's metrics (TLS reloads, refused
	// connections). Nil registers nowhere.
	Registerer prometheus.Registerer
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Hub == nil {
		errs = append(errs, errors.New("node: Hub is required"))
	}
	if c.PingInterval < 0 || c.PongWait < 0 || c.WriteWait < 0 {
		errs = append(errs, errors.New("node: timings must not be negative"))
	}
	if c.PingInterval > 0 && c.PongWait > 0 && c.PongWait <= c.PingInterval {
		errs = append(errs, errors.New("node: PongWait must be longer than PingInterval"))
	}
	if c.MaxMessageBytes < 0 {
		errs = append(errs, errors.New("node: MaxMessageBytes must not be negative"))
	}
	for _, o := range c.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("node: --tls-cert and --tls-key go together: set both or neither"))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.PingInterval == 0 {
		c.PingInterval = 10 * time.Second
	}
	if c.PongWait == 0 {
		c.PongWait = 15 * time.Second
	}
	if c.WriteWait == 0 {
		c.WriteWait = 10 * time.Second
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 65536
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 15 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.MaxUnauthenticated == 0 {
		c.MaxUnauthenticated = 10000
	}
	if c.MaxUnauthenticatedPerIP == 0 {
		c.MaxUnauthenticatedPerIP = 1000
	}
}
