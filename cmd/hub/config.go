package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fleethub/fleethub/internal/natsconn"
)

// check refuses option values the node could not run with, each in one
// line naming its flag: before anything starts (an embedded server, a
// listener), not later from deep inside the hub.
func (o *options) check() error {
	if n := len(o.masterSecret); n < 16 {
		return fmt.Errorf("--master-secret (or --master-secret-file, HUB_MASTER_SECRET): %d bytes; want at least 16 (for example the output of: openssl rand -hex 32)", n)
	}
	for _, d := range []struct {
		flag     string
		v, least time.Duration
	}{
		{"ping-interval", o.pingInterval, time.Millisecond},
		{"pong-wait", o.pongWait, time.Millisecond},
		{"auth-timeout", o.authTimeout, time.Millisecond},
		{"token-ttl", o.tokenTTL, time.Second},
		{"service-timeout", o.serviceTimeout, time.Millisecond},
		{"presence-ttl", o.presenceTTL, 2 * time.Second},
		{"node-ttl", o.nodeTTL, 300 * time.Millisecond},
		{"summary-interval", o.summaryInterval, 100 * time.Millisecond},
	} {
		if d.v < d.least {
			return fmt.Errorf("--%s %v: want at least %v", d.flag, d.v, d.least)
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"offline-grace", o.offlineGrace}, {"record-age", o.recordAge}, {"coalesce-window", o.coalesceWindow}} {
		if d.v < 0 {
			return fmt.Errorf("--%s %v: must not be negative", d.flag, d.v)
		}
	}
	if o.pongWait <= o.pingInterval {
		return fmt.Errorf("--pong-wait %v: want more than --ping-interval (%v), or every session times out", o.pongWait, o.pingInterval)
	}
	for _, n := range []struct {
		flag string
		v    int64
	}{{"status-history", int64(o.statusHistory)}, {"event-history", int64(o.eventHistory)},
		{"queue-bytes", int64(o.queueBytes)}, {"max-message-bytes", o.maxMessageBytes}} {
		if n.v < 1 {
			return fmt.Errorf("--%s %d: want at least 1", n.flag, n.v)
		}
	}
	return nil
}

// secretFlags are the flags whose values --print-config does not show.
var secretFlags = map[string]bool{"master-secret": true, "admin-password": true, "nats-password": true}

// printConfig writes the effective configuration, one flag a line as
// --name=value (what the command line, HUB_* variables, --dev and the
// defaults came to), secrets replaced by "<redacted>" (or "<empty>"), and
// the credentials of NATS URLs hidden.
func printConfig(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "print-config" || f.Name == "version" {
			return
		}
		v := f.Value.String()
		switch {
		case secretFlags[f.Name] && v == "":
			v = "<empty>"
		case secretFlags[f.Name]:
			v = "<redacted>"
		case strings.HasPrefix(f.Name, "nats-url"):
			v = natsconn.Redact(v)
		}
		fmt.Fprintf(w, "--%s=%s\n", f.Name, v)
	})
}
