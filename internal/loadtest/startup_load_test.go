//go:build load

package loadtest

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestStartTogetherLoad is the long form of TestStartTogetherFreshCluster:
// STARTUP_RUNS runs (default 20), each a fresh 3-server cluster and
// STARTUP_NODES hub nodes (default 3) started at the same moment with
// --replicas 3; every run must bring every node up. It reports the time
// from launch to the last node ready, p50 and max over the runs.
//
//	go test -count=1 -tags load -run TestStartTogetherLoad -v ./internal/loadtest
func TestStartTogetherLoad(t *testing.T) {
	runs, nodes := envInt(t, "STARTUP_RUNS", 20), envInt(t, "STARTUP_NODES", 3)
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var took []time.Duration
	for run := range runs {
		ok := t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			d := startupRun(t, bin, nodes, 90*time.Second)
			took = append(took, d)
			t.Logf("%d nodes ready %v after launch", nodes, d.Round(time.Millisecond))
		})
		if !ok {
			t.Fatalf("run %d of %d failed", run+1, runs)
		}
	}
	slices.Sort(took)
	t.Logf("%d of %d runs: %d nodes at once on a fresh 3-server cluster (--replicas 3), all ready after p50 %v, max %v",
		len(took), runs, nodes, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}
