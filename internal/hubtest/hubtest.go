// Package hubtest runs real hub nodes and real WebSocket clients for tests:
// a node is a hub.Server on a real NATS connection behind an
// httptest.Server, and a client is a gorilla WebSocket connection that
// speaks the protocol.
package hubtest

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// MasterSecret is the master secret of test nodes.
var MasterSecret = []byte("test-master-secret-0123456789")

// AdminPassword is the bootstrap admin's password on test nodes.
const AdminPassword = "admin-pw"

// Node is a running test node.
type Node struct {
	Hub      *hub.Server
	Node     *node.Node
	Server   *httptest.Server
	NC       *nats.Conn
	Registry *prometheus.Registry
}

// WSURL is the node's WebSocket URL.
func (n *Node) WSURL() string { return "ws" + strings.TrimPrefix(n.Server.URL, "http") + "/ws" }

// Option changes a test node's configuration.
type Option func(*hub.Config, *node.Config)

// StartNode starts a node named id on ns. It stops when the test ends.
func StartNode(t testing.TB, ns *server.Server, id string, opts ...Option) *Node {
	t.Helper()
	return StartNodeOn(t, natstest.Connect(t, ns, nats.Name(id)), id, opts...)
}

// StartNodeOn starts a node named id on an open NATS connection (one with
// the credentials and inbox prefix of a hub node, on a server with
// permissions). It stops when the test ends; nc stays the caller's.
func StartNodeOn(t testing.TB, nc *nats.Conn, id string, opts ...Option) *Node {
	t.Helper()
	reg := prometheus.NewRegistry()
	hc := hub.Config{
		Conn: nc, NodeID: id, MasterSecret: MasterSecret, AdminPassword: AdminPassword,
		BcryptCost: 4, Registerer: reg,
	}
	nodeCfg := node.Config{}
	for _, o := range opts {
		o(&hc, &nodeCfg)
	}
	srv, err := hub.New(hc)
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("hub start: %v", err)
	}
	nodeCfg.Hub = srv
	n, err := node.New(nodeCfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ts := httptest.NewServer(n.Handler())
	tn := &Node{Hub: srv, Node: n, Server: ts, NC: nc, Registry: reg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
		ts.Close()
	})
	return tn
}
