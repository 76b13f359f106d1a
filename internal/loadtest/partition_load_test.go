//go:build load

package loadtest

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// partitionEnv reads the long form's size from the environment:
// PARTITION_DEVICES (devices per data centre, default 500) and
// PARTITION_CUT (default 30s).
func partitionEnv(t *testing.T) (int, time.Duration) {
	devices, cut := 500, 30*time.Second
	if v := os.Getenv("PARTITION_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("PARTITION_DEVICES=%q: want a number of at least 2", v)
		}
		devices = n
	}
	if v := os.Getenv("PARTITION_CUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("PARTITION_CUT=%q: want a duration of at least 1s", v)
		}
		cut = d
	}
	return devices, cut
}

// TestPartition is the long form of the partition scenario on the
// shipped leaf configuration (docs/multidc): 500 devices and an admin per
// data centre, 40 ms each way, a 30 s cut. Every guarantee must hold.
func TestPartition(t *testing.T) {
	devices, cut := partitionEnv(t)
	testPartition(t, PartitionOptions{Topology: TopologyLeaf, Devices: devices, Cut: cut,
		ReportEvery: 2 * time.Second, Commands: 100})
}

// TestPartitionSupercluster runs the same scenario on the shipped
// supercluster configuration (docs/supercluster: two one-server clusters
// over gateways, one JetStream); PARTITION_SILENT=1 makes the cut a
// silent one. Every guarantee must hold but the 10 s convergence after the
// heal, which the meta election bounds there (reported in the table).
func TestPartitionSupercluster(t *testing.T) {
	devices, cut := partitionEnv(t)
	testPartition(t, PartitionOptions{Topology: TopologySupercluster, Devices: devices, Cut: cut,
		ReportEvery: 2 * time.Second, Commands: 100, Silent: os.Getenv("PARTITION_SILENT") == "1"})
}

// TestPartitionSilent is TestPartition with a silent cut (nothing
// closed, nothing passes: what a failed WAN usually looks like), which
// the servers see only through their pings (docs/multidc: 1 s, 3 missed).
func TestPartitionSilent(t *testing.T) {
	devices, cut := partitionEnv(t)
	testPartition(t, PartitionOptions{Topology: TopologyLeaf, Devices: devices, Cut: cut,
		ReportEvery: 2 * time.Second, Commands: 100, Silent: true})
}
