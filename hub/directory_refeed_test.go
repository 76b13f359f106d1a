package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// Refeed starts the directory's presence feed anew, as a data centre's
// return after a partition does: the index keeps what it had, follows new
// records, and the replaced feed's consumer goes (one consumer on the
// stream, not two).
func TestDirectoryRefeed(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	a := startNodeServer(t, nc, "a", Config{})
	natstest.Eventually(t, 10*time.Second, func() error {
		if !isDirectory(a) {
			return fmt.Errorf("a is not the directory yet")
		}
		return nil
	})
	connectDevice(t, a, "RF-1", "dog", "g1")
	adm, ft := attach(t, a, 1000, admin("root", "*"))
	answers := collect(ft)
	seq := 0
	listed := func(want int) func() error {
		return func() error {
			seq++
			if p := decodePage(t, call(t, adm, answers, fmt.Sprint(seq), "/admin/devices", nil)); len(p.Devices) != want {
				return fmt.Errorf("%d devices listed, want %d", len(p.Devices), want)
			}
			return nil
		}
	}
	natstest.Eventually(t, 10*time.Second, listed(1))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, StreamPresence)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Consumers
	}
	before := consumers()
	for range 3 {
		a.dir.Refeed()
		natstest.Eventually(t, 10*time.Second, func() error {
			if a.dir.refeeding.Load() {
				return fmt.Errorf("refeed still running")
			}
			return nil
		})
	}
	connectDevice(t, a, "RF-2", "dog", "g1")
	natstest.Eventually(t, 10*time.Second, listed(2))
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := consumers(); n > before {
			return fmt.Errorf("%d consumers on %s after the refeeds, %d before", n, StreamPresence, before)
		}
		return nil
	})
}
