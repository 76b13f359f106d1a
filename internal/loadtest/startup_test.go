package loadtest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
)

// startupRun starts a fresh 3-server cluster, then n hub nodes at the
// same moment, spread over the servers, with --replicas 3, and requires
// all of them ready within limit. It returns the time the last one took.
func startupRun(t *testing.T, bin string, n int, limit time.Duration) time.Duration {
	t.Helper()
	c := natstest.StartCluster(t, natstest.ClusterOptions{Name: "fresh"})
	var args [][]string
	for i := range n {
		url := c.Servers[i%len(c.Servers)].URL()
		args = append(args, []string{"--nats-url", url, "--replicas", "3", "--node-id", fmt.Sprintf("start-%d", i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	hubs, took, err := StartTogether(ctx, bin, args)
	for _, h := range hubs {
		if h != nil {
			t.Cleanup(func() { _ = h.Stop() })
		}
	}
	if err != nil {
		t.Fatalf("not every node came up within %v: %v", limit, err)
	}
	return slices.Max(took)
}

// TestStartTogetherFreshCluster: three nodes started at the same moment on
// a fresh 3-server cluster, state at --replicas 3, all become ready (the
// short form of TestStartTogetherLoad).
func TestStartTogetherFreshCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nats-server and hub processes; skipped with -short")
	}
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			took := startupRun(t, bin, 3, 60*time.Second)
			t.Logf("all three ready %v after launch", took)
		})
	}
}
