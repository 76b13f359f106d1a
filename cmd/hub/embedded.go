package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fleethub/fleethub/internal/embedded"
)

// startEmbedded starts the node's own NATS server (no --nats-url). Outside
// --dev it refuses a server that would let clients in without
// credentials off loopback; with --dev it starts and warns.
func startEmbedded(ctx context.Context, o options, log *slog.Logger) (*embedded.Server, error) {
	return embedded.Start(ctx, embedded.Config{
		Listen: o.natsListen, ConfFile: o.natsConf, DataDir: o.dataDir,
		Account: o.natsAccount, AllowOpen: o.dev, Logger: log,
		Credentials: o.natsCreds,
	})
}

// jetStreamCheck is the embedded server's own view of JetStream for the
// node's readiness (a clustered server without quorum is not ready); nil
// with --nats-url, where only the stores' check speaks.
func jetStreamCheck(ns *embedded.Server) func() error {
	if ns == nil {
		return nil
	}
	return ns.JetStreamReady
}

// refusal is the one line a refused start prints on stderr (exit 2): a
// configuration of the embedded server the node must not run with.
func refusal(err error) (string, bool) {
	var ce *embedded.ConfigError
	if !errors.As(err, &ce) {
		return "", false
	}
	return "hub: " + ce.Error(), true
}

// checkEmbeddedFlags refuses the embedded server's own flags on a node
// that joins an external NATS (--nats-url), where they would do nothing.
func checkEmbeddedFlags(o options) error {
	if o.nats.URL != "" && o.natsAccount != "" {
		return fmt.Errorf("--nats-account applies to the embedded server only: with --nats-url the connection's credentials decide the account; drop --nats-account")
	}
	if o.nats.URL == "" && o.nats.TLS() {
		return fmt.Errorf("--nats-tls-ca, --nats-tls-cert and --nats-tls-key apply to --nats-url only: the node's connection to its embedded server is in-process")
	}
	return nil
}
