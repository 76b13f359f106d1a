package node_test

import (
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/loadtest"
)

// TestServerFailover loses one server of a 3-server cluster under load,
// state at --replicas 3: three hub nodes, one on each server; three
// devices on each node reporting status every 150 ms and answering
// commands; an admin on the first node commanding them in turn. The
// server killed (with SIGKILL) is the third node's, and leads HUB_STATUS,
// hub_nodes and hub_presence (their leaders are moved there first), so
// one kill is a status failover, a liveness and presence failover, and a
// node's NATS connection moving to another server.
//
// Throughout: no WebSocket session ends; no device gets an offline
// record; every status answered 0 is in HUB_STATUS afterwards; every
// status report is answered; commands to devices of the nodes whose
// server stayed up all succeed (a device's status waits for the new
// leader off its read loop, so its command answers are not held up).
// Then the server is started again, and every device reports once more.
// The long form, 500 devices and repeated kills, is TestFailoverLoad in
// internal/loadtest.
func TestServerFailover(t *testing.T) {
	t.Parallel()
	f := loadtest.StartFailover(t, loadtest.FailoverOptions{})
	// The stores the nodes write: their data centre's own (the cluster
	// has a name, so the nodes run in data-centre mode).
	l := f.Nodes[0].Hub.Layout()
	f.PlaceLeaders(t, 2, l.StatusStream(), "KV_"+l.Nodes(), "KV_"+l.Presence())
	f.Run(t, 2*time.Second)
	f.Kill(t, 2)
	f.Run(t, 12*time.Second)
	f.Restart(t, 2)
	f.Run(t, 2*time.Second)
	t.Log(f.Check(t))
}
