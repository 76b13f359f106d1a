package hubtest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/node"
)

// Serve runs the node's own listener, Node.Serve (HTTPS and WSS when the
// node has a TLS certificate), on a free loopback port until the test
// ends, and returns its address, host:port. The test's cleanup stops it
// (which shuts the node down) and waits for Serve to return.
func (n *Node) Serve(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Node.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("node serve did not return")
		}
	})
	return ln.Addr().String()
}

// TLS is an option serving the pair of PEM files certFile and keyFile
// (node.Config.TLSCertFile, TLSKeyFile), with the node's metrics in the
// test node's Registry. Only Serve speaks TLS; the node's httptest server
// stays plain.
func TLS(certFile, keyFile string) Option {
	return func(hc *hub.Config, nc *node.Config) {
		nc.TLSCertFile, nc.TLSKeyFile = certFile, keyFile
		nc.Registerer = hc.Registerer
	}
}
