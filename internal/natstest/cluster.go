package natstest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// Cluster is a NATS cluster of nats-server processes on loopback, with
// JetStream on every server.
type Cluster struct {
	Name    string
	Servers []*Proc
	// ClusterPorts are the servers' route ports, GatewayPort the gateway
	// port of each server (0 without gateways).
	ClusterPorts, GatewayPorts []int
	// LeafPorts are the servers' leaf node ports (ClusterOptions.Leaf).
	LeafPorts []int
}

// ClusterOptions shapes StartCluster.
type ClusterOptions struct {
	// Name is the cluster's name (default "c1"); servers are <name>-<i>.
	Name string
	// JSDomain, when set, is the JetStream domain of every server.
	JSDomain string
	// GatewayAdvertise, when set, is the gateway address each server
	// advertises (one per server), so that other clusters reach it
	// through that address (a wanproxy) and never directly.
	GatewayAdvertise []string
	// Leaf gives every server a leaf node listener (LeafPorts) that does
	// not advertise the cluster's other leaf URLs, so a leaf's link stays
	// on the address it was given (a wanproxy).
	Leaf bool
	// Size is the number of servers (default 3). A single server
	// without gateways has no cluster block (JetStream standalone).
	Size int
	// Extra is added to every server's configuration (authorization,
	// accounts, a gateway block: %d in it is not expanded).
	Extra string
	// Gateway, when set, gives every server a gateway listener and this
	// block of gateways to other clusters, e.g.
	// `gateways: [{name: "c2", urls: ["nats://127.0.0.1:7222"]}]`.
	Gateway string
	// GatewayPorts are fixed gateway ports (one per server), so that
	// another cluster started before this one can name them.
	GatewayPorts []int
	// Env is passed to every server.
	Env []string
}

// URLs are the client URLs of every server, comma-separated.
func (c *Cluster) URLs() string {
	var u []string
	for _, s := range c.Servers {
		u = append(u, s.URL())
	}
	return strings.Join(u, ",")
}

// StartCluster starts a cluster of nats-server processes with JetStream,
// each with its own store in the test's temporary directory, and returns
// once every server accepts client connections (JetStream may still be
// electing its meta leader: callers wait for what they need).
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Name == "" {
		o.Name = "c1"
	}
	if o.Size == 0 {
		o.Size = 3
	}
	c := &Cluster{Name: o.Name}
	dir := t.TempDir()
	ports := make([]int, o.Size)
	for i := range ports {
		ports[i] = FreePort(t)
		c.ClusterPorts = append(c.ClusterPorts, FreePort(t))
		gw := 0
		switch {
		case i < len(o.GatewayPorts):
			gw = o.GatewayPorts[i]
		case o.Gateway != "":
			gw = FreePort(t)
		}
		c.GatewayPorts = append(c.GatewayPorts, gw)
		if o.Leaf {
			c.LeafPorts = append(c.LeafPorts, FreePort(t))
		}
	}
	var routes []string
	for _, p := range c.ClusterPorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	confs := make([]string, o.Size)
	for i := range ports {
		name := fmt.Sprintf("%s-%d", o.Name, i+1)
		var b strings.Builder
		fmt.Fprintf(&b, "server_name: %q\nlisten: 127.0.0.1:%d\n", name, ports[i])
		fmt.Fprintf(&b, "jetstream { store_dir: %q", filepath.ToSlash(filepath.Join(dir, name)))
		if o.JSDomain != "" {
			fmt.Fprintf(&b, ", domain: %q", o.JSDomain)
		}
		b.WriteString(" }\n")
		// A lone server without gateways runs standalone: with only a
		// route to itself its JetStream waits for routing that never
		// comes, and without routes it refuses to start.
		if o.Size > 1 || c.GatewayPorts[i] != 0 {
			fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", o.Name, c.ClusterPorts[i], strings.Join(routes, ", "))
		}
		if c.GatewayPorts[i] != 0 {
			adv := ""
			if i < len(o.GatewayAdvertise) {
				adv = fmt.Sprintf("  advertise: %q\n", o.GatewayAdvertise[i])
			}
			fmt.Fprintf(&b, "gateway {\n  name: %q\n  listen: 127.0.0.1:%d\n%s  %s\n}\n", o.Name, c.GatewayPorts[i], adv, o.Gateway)
		}
		if o.Leaf {
			fmt.Fprintf(&b, "leafnodes {\n  listen: 127.0.0.1:%d\n  no_advertise: true\n}\n", c.LeafPorts[i])
		}
		b.WriteString(o.Extra)
		confs[i] = b.String()
	}
	// Start all before waiting for any: a server of a fresh cluster
	// listens for clients at once, routes come as the others appear.
	for i := range ports {
		c.Servers = append(c.Servers, StartProc(t, ports[i], confs[i], o.Env...))
	}
	return c
}
