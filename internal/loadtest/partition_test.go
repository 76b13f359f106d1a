package loadtest

import (
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
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := RunPartition(t, PartitionOptions{
		Topology: TopologyLeaf, Hub: bin, Devices: 20, Delay: 40 * time.Millisecond,
		Cut: 5 * time.Second, ReportEvery: 500 * time.Millisecond, Commands: 10,
	})
	t.Logf("partition figures:\n%s", r.Table())
	for _, p := range r.Problems {
		t.Error(p)
	}
}
