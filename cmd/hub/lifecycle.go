package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/embedded"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/internal/natsconn"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
)

// Back-off of the hub's start, tried again until it succeeds.
const (
	startBackoffMin = 250 * time.Millisecond
	startBackoffMax = 5 * time.Second
)

// reconnectDelay is the wait after a failed pass over every server of
// the connection, the n-th in a row: 250 ms doubling to 1 s, with jitter,
// so that nodes started before their NATS cluster do not dial in step.
func reconnectDelay(n int) time.Duration {
	d := 250 * time.Millisecond << min(max(n-1, 0), 2)
	return d/2 + rand.N(d/2+1)
}

// connectNATS makes the node's connection: to the embedded server in
// process when ns is set, else to --nats-url. It does not wait for a
// server: the first connect and every reconnect are retried, with back-off,
// for as long as the node runs, also when the server refuses the
// credentials (see loadNATSConn); failures are logged at a bounded rate.
func connectNATS(o options, ns *embedded.Server, log *slog.Logger) (*nats.Conn, error) {
	failLog := rate.NewLimiter(rate.Every(30*time.Second), 3)
	opts := []nats.Option{nats.Name(o.nodeID), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.CustomReconnectDelay(reconnectDelay),
		nats.ConnectHandler(func(c *nats.Conn) { log.Info("NATS connected", "url", c.ConnectedUrlRedacted()) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // the node closing its own connection
				log.Debug("NATS connection closed")
				return
			}
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if failLog.Allow() {
				log.Warn("NATS not reachable yet; retrying", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("NATS async error", "subject", subj, "err", err)
		}),
		// Replies to the node come to its own inbox prefix, which a
		// backend's permissions (allowed nats.go's default _INBOX.>) do
		// not reach.
		natsconn.InboxPrefix(schema.NodeInboxPrefix),
	}
	if ns != nil {
		return nats.Connect("", append(opts, ns.ConnOptions()...)...)
	}
	return nats.Connect(o.nats.URL, append(opts, o.natsAuth...)...)
}

// startHub starts the hub, trying again after a jittered exponential
// back-off (startBackoffMin to startBackoffMax) until it succeeds or ctx
// ends; it reports whether it started. Each failure is logged, the
// first few at once and then at most one every 30 s. Meanwhile the node
// answers /readyz 503, naming what is missing.
func startHub(ctx context.Context, srv *hub.Server, log *slog.Logger) bool {
	b := jscreate.Backoff{Min: startBackoffMin, Max: startBackoffMax}
	failLog := rate.NewLimiter(rate.Every(30*time.Second), 3)
	began := time.Now()
	for attempt := 1; ; attempt++ {
		err := srv.Start(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info("hub started after waiting", "attempts", attempt, "waited", time.Since(began).Round(time.Millisecond))
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if failLog.Allow() {
			log.Warn("hub not started yet; trying again", "attempt", attempt, "err", err)
		}
		if jscreate.Sleep(ctx, b.Next()) != nil {
			return false
		}
	}
}
