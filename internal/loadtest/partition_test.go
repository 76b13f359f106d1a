package loadtest

import (
	"strings"
	"testing"
	"time"
)

// TestPartitionShort is the short form of the partition scenario on the
// shipped leaf configuration (docs/multidc: a JetStream domain per data
// centre, west a leaf node of east, 40 ms each way): 20 devices and an
// admin per data centre, a 5 s cut. TestPartition (-tags load) is the
// long form.
func TestPartitionShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nats-servers and two hub processes; skipped in -short")
	}
	testPartition(t, PartitionOptions{Topology: TopologyLeaf, Devices: 20, Cut: 5 * time.Second,
		ReportEvery: 500 * time.Millisecond, Commands: 10})
}

// TestPartitionSuperclusterShort is the same on the shipped supercluster
// (docs/supercluster: two clusters over gateways, one JetStream).
// TestPartitionSupercluster (-tags load) is the long form.
func TestPartitionSuperclusterShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nats-servers and two hub processes; skipped in -short")
	}
	testPartition(t, PartitionOptions{Topology: TopologySupercluster, Devices: 20, Cut: 5 * time.Second,
		ReportEvery: 500 * time.Millisecond, Commands: 10})
}

// testPartition runs the partition scenario with o (a hub built for it,
// 40 ms each way), prints its table and fails t with every problem found.
// On the supercluster a listing's convergence after the heal beyond 10 s
// is logged, not failed: JetStream's meta election after the heal bounds
// it there (docs/topologies.md).
func testPartition(t *testing.T, o PartitionOptions) {
	t.Helper()
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o.Hub, o.Delay = bin, 40*time.Millisecond
	r := RunPartition(t, o)
	t.Logf("partition figures (%s):\n%s", o.Topology, r.Table())
	for _, p := range r.Problems {
		if o.Topology == TopologySupercluster && strings.Contains(p, "to show every device online") {
			t.Log(p)
			continue
		}
		t.Error(p)
	}
}
