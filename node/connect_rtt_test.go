package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/wanproxy"
	"github.com/nats-io/nats.go"
)

// A device's auth waits for four round trips to JetStream, one after
// the other: the nonce claim, the index key, the entry's create (the last
// record read beside it) and the connected record. The subscriptions are
// confirmed by those requests, with no flush of their own. With the node
// reaching NATS over a link of a long round trip, the auth's answer comes
// after four of them and some processing, well under five (it used to
// take six: a flush, and the record read after the create). The fastest
// of a few connects is taken, so that a busy machine does not decide.
func TestDeviceAuthRoundTrips(t *testing.T) {
	t.Parallel()
	const oneWay = 40 * time.Millisecond
	rtt := 2 * oneWay
	ns := natstest.Run(t)
	p, err := wanproxy.New(wanproxy.Config{Target: ns.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	nc, err := nats.Connect("nats://" + p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	n := hubtest.StartNodeOn(t, nc, "rtt")
	p.SetDelay(oneWay) // after the start, whose setup takes many round trips
	best := time.Duration(1<<63 - 1)
	for i := range 4 {
		c := hubtest.Dial(t, n.WSURL(), nil)
		start := time.Now()
		c.MustOK("/auth/device", hubtest.DeviceArgs(fmt.Sprintf("RTT-%d", i), "dog"))
		best = min(best, time.Since(start))
	}
	t.Logf("device auth over a %v round trip: %v (%.1f round trips)", rtt, best, float64(best)/float64(rtt))
	if best >= 5*rtt {
		t.Fatalf("device auth took %v over a %v round trip: %.1f round trips, want under 5", best, rtt, float64(best)/float64(rtt))
	}
}
