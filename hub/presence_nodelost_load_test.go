//go:build load

package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A node that held 10,000 devices dies: the coordinator reads the lost
// node's index and reports each device node_lost exactly once, all of
// them within 10 s of the death (node TTL and grace included).
//
//	go test -tags load -run TestNodeLostTenThousand -v ./hub
func TestNodeLostTenThousand(t *testing.T) {
	const devices = 10000
	ns := natstest.Run(t)
	cfg := Config{NodeTTL: time.Second, OfflineGrace: 500 * time.Millisecond}
	startNodeServer(t, natstest.Connect(t, ns), "node-a", cfg)
	doomed := natstest.Connect(t, ns)
	b := startNodeServer(t, doomed, "node-b", cfg)
	t0 := time.Now()
	connectDevices(t, b, "NL", devices)
	t.Logf("%d devices connected to node-b in %v", devices, time.Since(t0).Round(time.Millisecond))

	backend := natstest.Connect(t, ns)
	var mu sync.Mutex
	lost := make(map[string]int)
	var first, last time.Time
	if _, err := backend.Subscribe(subjects.AllPresence, func(m *nats.Msg) {
		var r PresenceRecord
		if json.Unmarshal(m.Data, &r) != nil || r.Reason != ReasonNodeLost {
			return
		}
		mu.Lock()
		lost[r.SN]++
		last = time.Now()
		if first.IsZero() {
			first = last
		}
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}

	// Node B dies: off NATS at once, its liveness entry expires.
	died := time.Now()
	doomed.Close()
	natstest.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(lost) < devices {
			return fmt.Errorf("%d of %d devices reported node_lost", len(lost), devices)
		}
		return nil
	})
	mu.Lock()
	took, spread := last.Sub(died), last.Sub(first)
	mu.Unlock()
	t.Logf("%d devices reported node_lost %v after node-b died (node TTL %v, grace %v), %v from the first record to the last",
		devices, took.Round(time.Millisecond), cfg.NodeTTL, cfg.OfflineGrace, spread.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("node_lost took %v, want within 10s", took)
	}

	// Exactly once: two records per device in HUB_PRESENCE, and no second
	// node_lost on the bus.
	js, err := jetstream.New(backend)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subjects.AllPresence))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != devices {
		t.Fatalf("%d devices in %s, want %d", len(info.State.Subjects), StreamPresence, devices)
	}
	for subj, n := range info.State.Subjects {
		if n != 2 {
			t.Fatalf("%s: %d records, want connected and node_lost", subj, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for sn, n := range lost {
		if n != 1 {
			t.Fatalf("%s reported node_lost %d times", sn, n)
		}
	}
}
