//go:build load

package multidc

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// TestCoreAcrossGateways answers question e: a device's command subject
// subscribed in west is reached by a request from east; a queue group
// with members in both DCs answers from the requester's own DC; a request
// for a subject only the other side serves, during a cut, fails at once
// with no responders.
func TestCoreAcrossGateways(t *testing.T) {
	sc := natstest.StartSupercluster(t, natstest.SuperclusterOptions{Delay: wanDelay})
	eastURL, westURL := sc.Cluster("east").Servers[0].URL(), sc.Cluster("west").Servers[0].URL()
	natstest.WaitReachable(t, eastURL, westURL, 30*time.Second)
	natstest.WaitReachable(t, westURL, eastURL, 30*time.Second)
	ncE, _ := connect(t, eastURL, "")
	ncW, _ := connect(t, westURL, "")

	// A device's command subject, first subscribed after the gateways
	// formed (interest-only mode for the account after the first
	// no-interest replies).
	for range 50 {
		// Publishes with no interest anywhere switch east's gateway to
		// interest-only mode for this account.
		_ = ncE.Publish("hub.dev.nobody.cmd", nil)
	}
	sub, err := ncW.Subscribe("hub.dev.R-001.cmd", func(m *nats.Msg) { _ = m.Respond([]byte(`{"code":0}`)) })
	if err != nil {
		t.Fatal(err)
	}
	if err := ncW.Flush(); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, 10*time.Second, func() error {
		_, err := ncE.Request("hub.dev.R-001.cmd", nil, time.Second)
		return err
	})
	t.Logf("east request reaches a new west subscription %.1f ms after it was flushed", ms(d))
	p50, worst, err := timed(20, func(int) error { _, err := ncE.Request("hub.dev.R-001.cmd", nil, time.Second); return err })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("command round trip east -> west device subject: p50 %.1f ms max %.1f ms", ms(p50), ms(worst))

	// Queue group members in both DCs: east's requests stay in east.
	var inEast, inWest atomic.Int64
	for _, c := range []struct {
		nc *nats.Conn
		n  *atomic.Int64
	}{{ncE, &inEast}, {ncW, &inWest}} {
		if _, err := c.nc.QueueSubscribe("hub.svc.x", "svc", func(m *nats.Msg) { c.n.Add(1); _ = m.Respond(nil) }); err != nil {
			t.Fatal(err)
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, func() error { _, err := ncW.Request("hub.svc.x", nil, time.Second); return err })
	inEast.Store(0)
	inWest.Store(0)
	for range 100 {
		if _, err := ncE.Request("hub.svc.x", nil, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("queue group with a member in each DC, 100 requests from east: east answered %d, west %d", inEast.Load(), inWest.Load())
	if inEast.Load() != 100 {
		t.Errorf("requests left the DC: east %d west %d", inEast.Load(), inWest.Load())
	}

	// A cut: the west-only subject has no responders in east.
	sc.Cut()
	var errCut error
	d = waitFor(t, 10*time.Second, func() error {
		_, errCut = ncE.Request("hub.dev.R-001.cmd", nil, 2*time.Second)
		if errCut == nil {
			return errNotYet
		}
		return nil
	})
	t0 := time.Now()
	_, err = ncE.Request("hub.dev.R-001.cmd", nil, 2*time.Second)
	t.Logf("cut: east request for the west device fails (%v after the cut: %v), next one in %.1f ms: %v", d.Round(time.Millisecond), errCut, ms(time.Since(t0)), err)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("during the cut: %v, want no responders", err)
	}
	// The queue group keeps answering from east alone.
	if _, err := ncE.Request("hub.svc.x", nil, time.Second); err != nil {
		t.Errorf("local queue member during cut: %v", err)
	}
	sc.Heal()
	t0 = time.Now()
	waitFor(t, 60*time.Second, func() error { _, err := ncE.Request("hub.dev.R-001.cmd", nil, time.Second); return err })
	t.Logf("heal: the west device subject answers east again after %.0f ms", ms(time.Since(t0)))
	_ = sub.Unsubscribe()
}

// TestCoreAcrossSilentWAN: a WAN that goes silent instead of closing. The
// servers notice only through missed pings (here ping_interval 1 s,
// ping_max 2; the default is 2 min and 2), and until then a request for
// the other side times out instead of failing at once.
func TestCoreAcrossSilentWAN(t *testing.T) {
	sc := natstest.StartSupercluster(t, natstest.SuperclusterOptions{Delay: wanDelay, Extra: "ping_interval: \"1s\"\nping_max: 2\n"})
	eastURL, westURL := sc.Cluster("east").Servers[0].URL(), sc.Cluster("west").Servers[0].URL()
	natstest.WaitReachable(t, eastURL, westURL, 30*time.Second)
	ncE, _ := connect(t, eastURL, "")
	ncW, _ := connect(t, westURL, "")
	if _, err := ncW.Subscribe("hub.dev.R-001.cmd", func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
		t.Fatal(err)
	}
	_ = ncW.Flush()
	waitFor(t, 10*time.Second, func() error { _, err := ncE.Request("hub.dev.R-001.cmd", nil, time.Second); return err })

	sc.Blackhole()
	at := time.Now()
	timeouts := 0
	d := waitFor(t, 60*time.Second, func() error {
		_, err := ncE.Request("hub.dev.R-001.cmd", nil, 500*time.Millisecond)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil
		case errors.Is(err, nats.ErrTimeout):
			timeouts++
		}
		return errNotYet
	})
	t.Logf("silent WAN: %d requests timed out (500 ms each) before east answered no responders, %.1f s after the link went silent", timeouts, d.Seconds())
	sc.Heal()
	t0 := time.Now()
	waitFor(t, 60*time.Second, func() error { _, err := ncE.Request("hub.dev.R-001.cmd", nil, time.Second); return err })
	t.Logf("silent WAN for %.1f s: the device answers east again %.1f s after heal", t0.Sub(at).Seconds(), time.Since(t0).Seconds())
}
