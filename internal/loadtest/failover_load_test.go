//go:build load

// TestFailoverLoad is the long form of node's TestServerFailover: 500
// devices over three hub nodes on a 3-server cluster (state R3), an admin
// commanding them in turn, and repeated SIGKILLs of the server leading,
// in turn, HUB_STATUS, KV_hub_nodes and KV_hub_presence, each started
// again once every stream is current. `make load` runs it; alone:
//
//	FAILOVER_DEVICES=500 FAILOVER_KILLS=6 go test -count=1 -tags load \
//	  -run TestFailoverLoad -v -timeout 20m ./internal/loadtest
//
// It fails on a session ended, a false offline, an acknowledged status
// missing from HUB_STATUS, a report never answered or a command failed to
// a device of a node whose server stayed up, and logs the figures: status
// acknowledgement p99 overall and for reports sent within
// FailoverWindow after a kill, command round trip p99, records lost,
// false offlines.
package loadtest

import (
	"testing"
	"time"
)

func TestFailoverLoad(t *testing.T) {
	devices := envInt(t, "FAILOVER_DEVICES", 500)
	kills := envInt(t, "FAILOVER_KILLS", 6)
	f := StartFailover(t, FailoverOptions{PerNode: (devices + 2) / 3, ReportEvery: time.Second})
	l := f.Nodes[0].Hub.Layout() // the stores the nodes write
	targets := []string{l.StatusStream(), "KV_" + l.Nodes(), "KV_" + l.Presence()}
	f.Run(t, 3*time.Second)
	for k := range kills {
		target := targets[k%len(targets)]
		server := f.LeaderOf(t, target)
		t.Logf("kill %d: server %d, leader of %s", k+1, server, target)
		f.Kill(t, server)
		f.Run(t, 12*time.Second)
		f.Restart(t, server)
		f.Run(t, 3*time.Second)
	}
	t.Log(f.Check(t))
}
