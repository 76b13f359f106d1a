package main

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// tlsOptions are the flags of TLS on the WebSocket edge: with both files
// the node serves HTTPS and WSS only on --listen, and re-reads the files
// when they change (node/tlscert.go).
type tlsOptions struct {
	cert, key string
}

// check refuses half a pair and a pair that does not load, before anything
// is started: the node must not come up serving plain HTTP, nor fail only
// after it has joined NATS.
func (t tlsOptions) check() error {
	if (t.cert == "") != (t.key == "") {
		return errors.New("--tls-cert and --tls-key go together: set both (or HUB_TLS_CERT and HUB_TLS_KEY) or neither")
	}
	if t.cert == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(t.cert, t.key); err != nil {
		return fmt.Errorf("--tls-cert %s, --tls-key %s: %w", t.cert, t.key, err)
	}
	return nil
}

// schemes are the URL schemes of the node's HTTP and WebSocket endpoints,
// for the log lines that tell the operator where the node is.
func (t tlsOptions) schemes() (httpScheme, wsScheme string) {
	if t.cert != "" {
		return "https", "wss"
	}
	return "http", "ws"
}
