package main

import (
	"flag"

	"github.com/fleethub/fleethub/internal/cli"
	"github.com/nats-io/nats.go"
)

// registerNATSConn adds the flags of the node's connection to NATS (URL,
// credentials, TLS) and the secret files.
func (o *options) registerNATSConn(fs *flag.FlagSet) {
	o.nats.Register(fs, "")
	fs.Lookup("nats-url").Usage = "NATS servers to join, comma-separated (nats://user:password@host:port accepted); empty starts an embedded NATS server with JetStream"
	fs.StringVar(&o.masterSecretFile, "master-secret-file", "", "read the master secret from this file (a trailing newline is not part of it)")
	fs.StringVar(&o.adminPasswordFile, "admin-password-file", "", "read --admin-password from this file (a trailing newline is not part of it)")
}

// loadNATSConn reads the secret files into the options and checks the
// connection flags, so that a missing file or a wrong key refuses the
// start with one line naming the flag (exit 2), before any dial.
func (o *options) loadNATSConn() error {
	var err error
	if o.masterSecret, err = cli.SecretFromFile("master-secret", o.masterSecret, "master-secret-file", o.masterSecretFile); err != nil {
		return err
	}
	if o.adminPassword, err = cli.SecretFromFile("admin-password", o.adminPassword, "admin-password-file", o.adminPasswordFile); err != nil {
		return err
	}
	if o.natsAuth, err = o.nats.Options(); err != nil {
		return err
	}
	if o.natsCreds, err = o.nats.AuthOptions(); err != nil {
		return err
	}
	// nats.go gives up reconnecting when the server refuses the
	// credentials twice in a row. A node must not: credentials being
	// rotated are refused until the new file is in place, and the files
	// are read again at each reconnect (until then /readyz says 503).
	o.natsAuth = append(o.natsAuth, nats.IgnoreAuthErrorAbort())
	return nil
}
