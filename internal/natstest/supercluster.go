package natstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/wanproxy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Supercluster is several NATS clusters (data centres) joined by gateways,
// every gateway connection passing through a wanproxy so that a test can
// delay and cut the WAN between them.
type Supercluster struct {
	Clusters []*Cluster
	// WAN holds, per cluster name, the proxies in front of that cluster's
	// gateway ports (one per server): every connection into the cluster
	// from another one passes one of them.
	WAN map[string][]*wanproxy.Proxy
}

// SuperclusterOptions shapes StartSupercluster.
type SuperclusterOptions struct {
	// Names of the clusters (default "east", "west").
	Names []string
	// Sizes are the servers per cluster, in the order of Names (default
	// 1 each).
	Sizes []int
	// Delay is the WAN delay each way between clusters.
	Delay time.Duration
	// JSDomains, when set, are the clusters' JetStream domains, in the
	// order of Names.
	JSDomains []string
	// Extra is added to every server's configuration.
	Extra string
	// Env is passed to every server.
	Env []string
}

// StartSupercluster starts the clusters with JetStream, each server's
// gateway advertised on its own wanproxy, and returns once every server
// accepts client connections. Gateways connect (and the JetStream meta
// group forms across the clusters) shortly after: wait for what the test
// needs, for example with WaitGateways.
func StartSupercluster(t testing.TB, o SuperclusterOptions) *Supercluster {
	t.Helper()
	if len(o.Names) == 0 {
		o.Names = []string{"east", "west"}
	}
	sc := &Supercluster{WAN: make(map[string][]*wanproxy.Proxy)}
	gwPorts := make(map[string][]int)
	for i, name := range o.Names {
		size := 1
		if i < len(o.Sizes) && o.Sizes[i] > 0 {
			size = o.Sizes[i]
		}
		for range size {
			port := FreePort(t)
			p, err := wanproxy.New(wanproxy.Config{Target: fmt.Sprintf("127.0.0.1:%d", port), Delay: o.Delay})
			if err != nil {
				t.Fatal(err)
			}
			// Registered before the servers start, so closed after they
			// stop.
			t.Cleanup(func() { _ = p.Close() })
			gwPorts[name] = append(gwPorts[name], port)
			sc.WAN[name] = append(sc.WAN[name], p)
		}
	}
	for i, name := range o.Names {
		domain := ""
		if i < len(o.JSDomains) {
			domain = o.JSDomains[i]
		}
		var gws []string
		for _, other := range o.Names {
			if other == name {
				continue
			}
			var urls []string
			for _, p := range sc.WAN[other] {
				urls = append(urls, fmt.Sprintf("%q", "nats://"+p.Addr()))
			}
			gws = append(gws, fmt.Sprintf("{name: %q, urls: [%s]}", other, strings.Join(urls, ", ")))
		}
		var adv []string
		for _, p := range sc.WAN[name] {
			adv = append(adv, p.Addr())
		}
		sc.Clusters = append(sc.Clusters, StartCluster(t, ClusterOptions{
			Name: name, Size: len(gwPorts[name]), Extra: o.Extra, Env: o.Env, JSDomain: domain,
			Gateway:          fmt.Sprintf("gateways: [%s]", strings.Join(gws, ", ")),
			GatewayPorts:     gwPorts[name],
			GatewayAdvertise: adv,
		}))
	}
	return sc
}

// Cluster returns the cluster named name, or nil.
func (sc *Supercluster) Cluster(name string) *Cluster {
	for _, c := range sc.Clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Cut partitions every cluster from every other: all gateway connections
// close and new ones are refused until Heal. Clients stay connected to
// their own cluster.
func (sc *Supercluster) Cut() {
	for _, ps := range sc.WAN {
		for _, p := range ps {
			p.Cut()
		}
	}
}

// Blackhole silences every gateway link without closing it (see
// wanproxy.Proxy.Blackhole): the servers notice only through their ping
// interval. Heal ends it.
func (sc *Supercluster) Blackhole() {
	for _, ps := range sc.WAN {
		for _, p := range ps {
			p.Blackhole()
		}
	}
}

// Heal lets gateway connections form again after Cut (or flow again after
// Blackhole); the servers
// reconnect on their own (gateway reconnect back-off, about a second).
func (sc *Supercluster) Heal() {
	for _, ps := range sc.WAN {
		for _, p := range ps {
			p.Heal()
		}
	}
}

// SetDelay changes the WAN delay each way for data sent from now on.
func (sc *Supercluster) SetDelay(d time.Duration) {
	for _, ps := range sc.WAN {
		for _, p := range ps {
			p.SetDelay(d)
		}
	}
}

// LeafSite is an edge site: one nats-server with JetStream in its own
// domain, connected as a leaf node through a wanproxy to a hub cluster.
type LeafSite struct {
	Server *Proc
	// Domain is the site's JetStream domain.
	Domain string
	// WAN holds the proxies the leaf connection passes, one per hub
	// server.
	WAN []*wanproxy.Proxy
}

// LeafSiteOptions shapes StartLeafSite.
type LeafSiteOptions struct {
	// Hub is the cluster the site connects to; it must have been started
	// with ClusterOptions.Leaf (and usually its own JSDomain).
	Hub *Cluster
	// Name is the server's name and, unless Domain is set, its JetStream
	// domain (default "edge").
	Name, Domain string
	// Delay is the WAN delay each way.
	Delay time.Duration
	// Extra is added to the server's configuration.
	Extra string
	// Env is passed to the server.
	Env []string
}

// StartLeafSite starts the leaf server and returns once it accepts
// client connections; the leaf connection forms shortly after (wait for
// it with WaitLeaf).
func StartLeafSite(t testing.TB, o LeafSiteOptions) *LeafSite {
	t.Helper()
	if o.Hub == nil || len(o.Hub.LeafPorts) == 0 {
		t.Fatal("natstest: StartLeafSite needs a hub cluster started with Leaf")
	}
	if o.Name == "" {
		o.Name = "edge"
	}
	if o.Domain == "" {
		o.Domain = o.Name
	}
	ls := &LeafSite{Domain: o.Domain}
	var urls []string
	for _, lp := range o.Hub.LeafPorts {
		p, err := wanproxy.New(wanproxy.Config{Target: fmt.Sprintf("127.0.0.1:%d", lp), Delay: o.Delay})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		ls.WAN = append(ls.WAN, p)
		urls = append(urls, fmt.Sprintf("%q", "nats-leaf://"+p.Addr()))
	}
	port := FreePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: 127.0.0.1:%d\n", o.Name, port)
	fmt.Fprintf(&b, "jetstream { store_dir: %q, domain: %q }\n", t.TempDir(), o.Domain)
	fmt.Fprintf(&b, "leafnodes {\n  reconnect: \"1s\"\n  remotes: [{urls: [%s]}]\n}\n", strings.Join(urls, ", "))
	b.WriteString(o.Extra)
	ls.Server = StartProc(t, port, b.String(), o.Env...)
	return ls
}

// Cut closes the leaf connection and refuses new ones until Heal.
func (ls *LeafSite) Cut() {
	for _, p := range ls.WAN {
		p.Cut()
	}
}

// Blackhole silences the leaf link without closing it.
func (ls *LeafSite) Blackhole() {
	for _, p := range ls.WAN {
		p.Blackhole()
	}
}

// Heal lets the leaf connect again after Cut (the leaf retries every
// second), or its link flow again after Blackhole.
func (ls *LeafSite) Heal() {
	for _, p := range ls.WAN {
		p.Heal()
	}
}

// SetDelay changes the WAN delay each way.
func (ls *LeafSite) SetDelay(d time.Duration) {
	for _, p := range ls.WAN {
		p.SetDelay(d)
	}
}

// WaitReachable waits until a request sent on a server of from is
// answered by a subscriber on a server of to: the gateway (or leaf) link
// between them is up and carries interest. It fails the test after
// timeout. opts are used for both connections (credentials).
func WaitReachable(t testing.TB, from, to string, timeout time.Duration, opts ...nats.Option) {
	t.Helper()
	sub, err := nats.Connect(to, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	subject := "natstest.reach." + nuid.Next()
	s, err := sub.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(nil) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(from, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	Eventually(t, timeout, func() error {
		_, err := pub.Request(subject, nil, 500*time.Millisecond)
		return err
	})
}
