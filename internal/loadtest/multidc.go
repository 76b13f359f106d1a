package loadtest

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/wanproxy"
	"github.com/nats-io/nuid"
)

// Topology is one of the shipped configurations of two data centres,
// "east" and "west".
type Topology string

// The shipped topologies.
const (
	// TopologyLeaf is docs/multidc/east.conf and west.conf: a JetStream
	// domain per data centre, west a leaf node of east (the recommended
	// one, and the edge site on a leaf node with its own domain).
	TopologyLeaf Topology = "multidc"
	// TopologySupercluster is docs/supercluster/east.conf and west.conf:
	// two clusters over gateways, one JetStream.
	TopologySupercluster Topology = "supercluster"
)

// DCNames are the data centres of the shipped topologies.
var DCNames = [2]string{"east", "west"}

// DCServers are the two data centres' nats-server processes, run on the
// shipped configuration files with ports, URLs and secrets in the
// environment, every byte between them passing a wanproxy.
type DCServers struct {
	Topology Topology
	Servers  [2]*natstest.Proc
	// WAN are the proxies on the link between the data centres: one in
	// front of east's leaf listener (leaf), or one in front of each
	// gateway (supercluster).
	WAN []*wanproxy.Proxy
}

// StartDCServers starts the topology's two servers, delay each way on the
// WAN, and returns once each accepts clients and a request from either
// data centre is answered in the other.
func StartDCServers(t testing.TB, top Topology, delay time.Duration) *DCServers {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := &DCServers{Topology: top}
	conf := func(dc string) string { return filepath.Join(root, "docs", string(top), dc+".conf") }
	store := func() []string { return []string{"-sd", t.TempDir()} }
	proxy := func(target int) *wanproxy.Proxy {
		p, err := wanproxy.New(wanproxy.Config{Target: "127.0.0.1:" + strconv.Itoa(target), Delay: delay})
		if err != nil {
			t.Fatal(err)
		}
		// Registered before the servers that use it start, so closed
		// after they stop.
		t.Cleanup(func() { _ = p.Close() })
		s.WAN = append(s.WAN, p)
		return p
	}
	env := func(kv ...any) []string {
		var e []string
		for i := 0; i < len(kv); i += 2 {
			e = append(e, fmt.Sprintf("%s=%v", kv[i], kv[i+1]))
		}
		return e
	}
	switch top {
	case TopologyLeaf:
		password := "leaf-" + nuid.Next()
		eastPort, leafPort, westPort := natstest.FreePort(t), natstest.FreePort(t), natstest.FreePort(t)
		s.Servers[0] = natstest.StartProcFileArgs(t, eastPort, conf("east"), store(), env(
			"FLEETHUB_EAST_PORT", eastPort, "FLEETHUB_EAST_LEAF_PORT", leafPort, "FLEETHUB_LEAF_PASSWORD", password)...)
		wan := proxy(leafPort)
		s.Servers[1] = natstest.StartProcFileArgs(t, westPort, conf("west"), store(), env(
			"FLEETHUB_WEST_PORT", westPort, "FLEETHUB_WEST_LEAF_REMOTE", "nats-leaf://leaf:"+password+"@"+wan.Addr())...)
	case TopologySupercluster:
		password := "gateway-" + nuid.Next()
		var client, route, gw [2]int
		var wan [2]*wanproxy.Proxy
		for i := range DCNames {
			client[i], route[i], gw[i] = natstest.FreePort(t), natstest.FreePort(t), natstest.FreePort(t)
			wan[i] = proxy(gw[i])
		}
		for i, dc := range DCNames {
			up, other := "FLEETHUB_"+strings.ToUpper(dc), "FLEETHUB_"+strings.ToUpper(DCNames[1-i])
			s.Servers[i] = natstest.StartProcFileArgs(t, client[i], conf(dc), store(), env(
				up+"_PORT", client[i], up+"_ROUTE_PORT", route[i],
				up+"_ROUTES", fmt.Sprintf("nats-route://127.0.0.1:%d", route[i]),
				up+"_GATEWAY_PORT", gw[i], up+"_GATEWAY_ADVERTISE", wan[i].Addr(),
				other+"_GATEWAY_URL", "nats://gateway:"+password+"@"+wan[1-i].Addr(),
				"FLEETHUB_GATEWAY_PASSWORD", password)...)
		}
	default:
		t.Fatalf("loadtest: unknown topology %q", top)
	}
	natstest.WaitReachable(t, s.Servers[0].URL(), s.Servers[1].URL(), 60*time.Second)
	natstest.WaitReachable(t, s.Servers[1].URL(), s.Servers[0].URL(), 60*time.Second)
	return s
}

// Cut partitions the data centres: every WAN connection closes and new
// ones are refused until Heal.
func (s *DCServers) Cut() {
	for _, p := range s.WAN {
		p.Cut()
	}
}

// Blackhole silences the WAN links without closing them (no FIN, no
// RST): the servers notice only through their pings. Heal ends it.
func (s *DCServers) Blackhole() {
	for _, p := range s.WAN {
		p.Blackhole()
	}
}

// Heal lets the WAN links form again after Cut, or flow again after
// Blackhole; the servers reconnect on their own
// (leaf reconnect 1 s, gateway back-off about a second).
func (s *DCServers) Heal() {
	for _, p := range s.WAN {
		p.Heal()
	}
}
