package loadtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of the one-binary cluster tests.
const (
	clusterReadyTimeout = 90 * time.Second // a node (re)started until /readyz 200
	// noQuorumTimeout bounds how long the survivor of two killed nodes
	// may still say ready (PROTOCOL.md §7: 503 within 15 s of the change).
	noQuorumTimeout = 15 * time.Second
	// unavailableRetry is how long a device refused with 503 tries again:
	// past a JetStream election of a replicated store (the nonces' leader
	// on the killed server), 4 to 9 s and longer on a loaded machine
	// (docs/topologies.md, Server failover).
	unavailableRetry = 15 * time.Second
)

// TestEmbeddedClusterRejoin is the short form of the one-binary cluster's
// guarantee (TestEmbeddedClusterRejoinLoop runs it 16 times under -tags
// load): the three nodes of docs/cluster started at once all become
// ready, with the hub's state at R3 and a device on each; a node killed
// with SIGKILL and started again rejoins (ready, serves devices) while the
// others keep their sessions; with two killed the survivor is not ready,
// and is again once one returns.
func TestEmbeddedClusterRejoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three hub processes with embedded clustered servers; skipped in -short")
	}
	runClusterRejoin(t, 2, 2)
}

// runClusterRejoin runs the scenario with iterations kill-and-restart
// rounds (the victim goes round the nodes) and devices per node.
func runClusterRejoin(t *testing.T, iterations, devices int) {
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	begin := time.Now()
	c, err := StartEmbeddedCluster(ctx, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				if n.Hub != nil {
					t.Logf("hub-%d log tail:\n%s", n.N, n.Hub.LogTail(3000))
				}
			}
		}
		c.Stop()
	})
	for _, n := range c.Nodes {
		if _, err := n.Hub.WaitReadiness(ctx, true); err != nil {
			t.Fatalf("hub-%d not ready: %v", n.N, err)
		}
	}
	t.Logf("three nodes started at once, all ready in %s", time.Since(begin).Round(time.Millisecond))
	checkR3(ctx, t)

	fleets := make([]*Fleet, ClusterSize)
	// dial connects devices to node n. An auth answered 503 ("try
	// again", as a device would) is tried again for up to 5 s: a node
	// that just rejoined may still refuse a few writes after /readyz
	// turned 200 (docs/topologies.md); each such refusal is counted.
	refusals := 0
	dial := func(n, round int) {
		t.Helper()
		f := NewFleet(c.Node(n).Hub.WSURL, fmt.Sprintf("cl-%d-%d-", n, round))
		deadline := time.Now().Add(unavailableRetry)
		for {
			err := f.Grow(ctx, devices, devices)
			if err == nil {
				break
			}
			if !strings.Contains(err.Error(), "code 503") || time.Now().After(deadline) {
				f.Close()
				t.Fatalf("devices on hub-%d: %v", n, err)
			}
			refusals++
			t.Logf("devices on hub-%d, round %d: %v; trying again", n, round, err)
			time.Sleep(250 * time.Millisecond)
		}
		fleets[n-1] = f
	}
	defer func() { t.Logf("device auths refused with 503 and tried again: %d", refusals) }()
	for n := 1; n <= ClusterSize; n++ {
		dial(n, 0)
	}
	t.Cleanup(func() {
		for _, f := range fleets {
			if f != nil {
				f.Close()
			}
		}
	})

	for i := range iterations {
		victim := i%ClusterSize + 1
		c.Kill(victim)
		fleets[victim-1].Close()
		fleets[victim-1] = nil
		begin = time.Now()
		if err := c.Start(ctx, victim); err != nil {
			t.Fatalf("round %d: restart hub-%d: %v", i, victim, err)
		}
		if _, err := c.Node(victim).Hub.WaitReadiness(ctx, true); err != nil {
			t.Fatalf("round %d: hub-%d did not rejoin: %v", i, victim, err)
		}
		t.Logf("round %d: hub-%d killed, restarted and ready in %s", i, victim, time.Since(begin).Round(time.Millisecond))
		dial(victim, i+1)
		for n, f := range fleets {
			if f == nil || n+1 == victim {
				continue
			}
			if d := f.Disconnects(); d != 0 {
				t.Fatalf("round %d: hub-%d dropped %d session(s) while hub-%d was down: %s", i, n+1, d, victim, f.Stats().EndingsString())
			}
		}
		for _, n := range c.Nodes {
			if _, err := n.Hub.WaitReadiness(ctx, true); err != nil {
				t.Fatalf("round %d: hub-%d: %v", i, n.N, err)
			}
		}
	}

	// Two down: the survivor has no quorum and must say so.
	c.Kill(2)
	c.Kill(3)
	for _, n := range []int{2, 3} {
		fleets[n-1].Close()
		fleets[n-1] = nil
	}
	qctx, qcancel := context.WithTimeout(ctx, noQuorumTimeout)
	took, err := c.Node(1).Hub.WaitReadiness(qctx, false)
	qcancel()
	if err != nil {
		t.Fatalf("hub-1 alone: %v", err)
	}
	r, err := c.Node(1).Hub.ReadyState(ctx)
	if err != nil || r.Code == 200 || !slices.Contains(r.Missing, "jetstream") {
		t.Fatalf("hub-1 alone: /readyz %d missing %v (%v), want 503 naming jetstream", r.Code, r.Missing, err)
	}
	t.Logf("hub-1 alone: /readyz 503 %v after %s", r.Missing, took.Round(time.Millisecond))
	if err := c.Start(ctx, 2); err != nil {
		t.Fatalf("restart hub-2: %v", err)
	}
	for _, n := range []int{1, 2} {
		if took, err = c.Node(n).Hub.WaitReadiness(ctx, true); err != nil {
			t.Fatalf("hub-%d with a quorum again: %v", n, err)
		}
	}
	t.Logf("hub-1 ready again %s after hub-2 answered /healthz", took.Round(time.Millisecond))
	if err := c.Start(ctx, 3); err != nil {
		t.Fatalf("restart hub-3: %v", err)
	}
	if _, err := c.Node(3).Hub.WaitReadiness(ctx, true); err != nil {
		t.Fatalf("hub-3: %v", err)
	}
	dial(2, iterations+1)
	dial(3, iterations+1)
	if d := fleets[0].Disconnects(); d != 0 {
		t.Fatalf("hub-1 dropped %d session(s): %s", d, fleets[0].Stats().EndingsString())
	}
}

// checkR3 asserts that every stream of the hub (its KV buckets
// included) has three replicas, each current or catching up on a
// distinct server.
func checkR3(ctx context.Context, t *testing.T) {
	t.Helper()
	nc, err := nats.Connect(ClusterNATSURL(1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas configured, cluster %+v; want 3 on three servers", name, info.Config.Replicas, info.Cluster)
		}
		count++
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if count < 5 {
		t.Fatalf("%d streams, want every bucket and stream of the hub", count)
	}
	t.Logf("%d streams, each at R3", count)
}
