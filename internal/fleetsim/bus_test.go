package fleetsim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/fleetsim"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// watched is a copy seen on a watch subject.
type watched struct {
	group, typ, sn, topic string
	data                  []byte
}

// TestWatchCopies: every status, event and presence record the simulator
// stores is followed by one copy of the same bytes on
// hub.watch.<group>.<type>.<sn>.<topic>, whose record the stream holds,
// and a record the stream did not take gets none.
func TestWatchCopies(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	hubtest.StartNode(t, ns, "hub-a", fastPresence)

	watcher := natstest.Connect(t, ns, nats.Name("watcher"))
	var mu sync.Mutex
	var seen []watched
	sub, err := watcher.Subscribe("hub.watch.>", func(m *nats.Msg) {
		tok := strings.Split(m.Subject, ".")
		if len(tok) != 6 {
			t.Errorf("watch subject %q", m.Subject)
			return
		}
		mu.Lock()
		seen = append(seen, watched{tok[2], tok[3], tok[4], tok[5], m.Data})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}

	nc := natstest.Connect(t, ns, nats.Name("fleetsim"))
	sim, stop := startStoppableSim(t, fleetsim.Config{
		Conn: nc, Conns: []*nats.Conn{natstest.Connect(t, ns)}, Devices: 30, Nodes: 3, Groups: 3,
		PresenceTTL: testPresenceTTL, NodeTTL: testNodeTTL,
		StatusEvery: 300 * time.Millisecond, EventsPerHour: 3 * 3600, ReconnectPerMinute: 2,
		OfflineFor: 200 * time.Millisecond, Ramp: 100 * time.Millisecond,
	})
	count := func(topic string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, w := range seen {
			if w.topic == topic {
				n++
			}
		}
		return n
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if st, ev, pr := count("status"), count("event"), count("presence"); st < 100 || ev < 10 || pr < 40 {
			return fmt.Errorf("copies: %d status, %d event, %d presence", st, ev, pr)
		}
		return nil
	})

	// The stream holds each copied record: its last record of that
	// subject is the copy's or a later one.
	js, err := jetstream.New(watcher)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	sample := slices.Clone(seen[:60])
	mu.Unlock()
	for _, w := range sample {
		var subj, stream string
		switch w.topic {
		case "status":
			subj, _ = subjects.DeviceStatus(w.sn)
			stream = hub.StreamStatus
		case "event":
			subj, _ = subjects.DeviceEvent(w.sn)
			stream = hub.StreamEvents
		case "presence":
			subj, _ = subjects.Presence(w.sn)
			stream = hub.StreamPresence
		default:
			t.Fatalf("topic %q", w.topic)
		}
		var copied struct {
			SN, Type, Group string
			At              int64
		}
		if err := json.Unmarshal(w.data, &copied); err != nil {
			t.Fatalf("copy on %s: %v", w.topic, err)
		}
		if copied.SN != w.sn || copied.Type != w.typ || copied.Group != w.group || w.typ != "sim" || !strings.HasPrefix(w.group, "simg") {
			t.Fatalf("copy %s/%s/%s/%s carries %s", w.group, w.typ, w.sn, w.topic, w.data)
		}
		str, err := js.Stream(context.Background(), stream)
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		m, err := str.GetLastMsgForSubject(context.Background(), subj)
		if err != nil {
			t.Fatalf("last of %s: %v", subj, err)
		}
		var stored struct{ At int64 }
		if err := json.Unmarshal(m.Data, &stored); err != nil || stored.At < copied.At {
			t.Fatalf("%s: stored %s, copy %s: the copy went out first", subj, m.Data, w.data)
		}
	}

	// Once stopped, every record the stream took has had its one copy.
	stop()
	st := sim.Stats()
	if st.Failed != 0 || st.PublishErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
	if want := st.Statuses + st.Events + st.Connects + st.Disconnects; st.WatchCopies != want {
		t.Fatalf("%d watch copies for %d records: %+v", st.WatchCopies, want, st)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if int64(len(seen)) != st.WatchCopies {
			return fmt.Errorf("%d copies seen, %d sent", len(seen), st.WatchCopies)
		}
		return nil
	})
	_ = sub.Unsubscribe()
}

// TestNodeIndex: the node index holds a key <node>.<sn> for every device
// online on a simulated node, and for no other, through churn.
func TestNodeIndex(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	hubtest.StartNode(t, ns, "hub-a", fastPresence)
	nc := natstest.Connect(t, ns, nats.Name("fleetsim"))
	sim, stop := startStoppableSim(t, fleetsim.Config{
		Conn: nc, Devices: 40, Nodes: 4,
		PresenceTTL: testPresenceTTL, NodeTTL: testNodeTTL,
		StatusEvery: -1, EventsPerHour: -1, ReconnectPerMinute: 3,
		OfflineFor: 300 * time.Millisecond, Ramp: 100 * time.Millisecond,
	})
	natstest.Eventually(t, 10*time.Second, func() error {
		if st := sim.Stats(); st.Disconnects < 10 {
			return fmt.Errorf("%d disconnects", st.Disconnects)
		}
		return nil
	})
	stop()

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(bucket string) []string {
		t.Helper()
		kv, err := js.KeyValue(context.Background(), bucket)
		if err != nil {
			t.Fatalf("bucket %s: %v", bucket, err)
		}
		l, err := kv.ListKeys(context.Background())
		if err != nil {
			t.Fatalf("keys of %s: %v", bucket, err)
		}
		var out []string
		for k := range l.Keys() {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	online := keys(hub.BucketPresence)
	var indexed []string
	for _, k := range keys(fleetsim.NodeIndexBucket) {
		node, sn, ok := strings.Cut(k, ".")
		var i int
		if _, err := fmt.Sscanf(sn, "SIM-%d", &i); !ok || err != nil || node != sim.NodeID(sim.NodeOf(i)) {
			t.Fatalf("index key %q", k)
		}
		indexed = append(indexed, sn)
	}
	slices.Sort(indexed)
	if len(online) == 0 || !slices.Equal(online, indexed) {
		t.Fatalf("online %v\nindexed %v", online, indexed)
	}
	if st := sim.Stats(); st.IndexWrites != st.Connects+st.Disconnects || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNodeIDsSortLast: simulated node ids sort after the ids hubs use, so
// a real hub, not a simulated node, is the coordinator (smallest live id).
func TestNodeIDsSortLast(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	sim, err := fleetsim.New(fleetsim.Config{Conn: nc, Devices: 1, Nodes: 12})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"hub-a", "node", "web-1-8080", "ip-10-0-0-7-8080", "zeus-8080", "z", "zz", "ZZZ"} {
		for k := range 12 {
			if sim.NodeID(k) <= id {
				t.Errorf("simulated %q sorts before hub id %q", sim.NodeID(k), id)
			}
		}
	}
	for _, bad := range []string{"a.b", "~sim", "sim*", "a b"} {
		if _, err := fleetsim.New(fleetsim.Config{Conn: nc, Devices: 1, NodePrefix: bad}); !errors.Is(err, fleetsim.ErrBadName) {
			t.Errorf("NodePrefix %q: %v", bad, err)
		}
	}
}

// TestPacing: status records go out at the configured rate, evenly, with
// the schedule kept (not behind by more than a few ticks).
func TestPacing(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	hubtest.StartNode(t, ns, "hub-a", fastPresence)
	nc := natstest.Connect(t, ns, nats.Name("fleetsim"))
	const devices = 400
	every := 500 * time.Millisecond
	sim := startSim(t, fleetsim.Config{
		Conn: nc, Devices: devices, Nodes: 2,
		PresenceTTL: testPresenceTTL, NodeTTL: testNodeTTL,
		StatusEvery: every, EventsPerHour: -1, ReconnectPerMinute: -1, Ramp: 400 * time.Millisecond,
		NoWatch: true, NoNodeIndex: true,
	})
	// Past the ramp and one period, the rate over a second and more
	// is that of the fleet.
	natstest.Eventually(t, 10*time.Second, func() error {
		if st := sim.Stats(); st.Connects < devices {
			return fmt.Errorf("%d connected", st.Connects)
		}
		return nil
	})
	at0, st0 := time.Now(), sim.Stats()
	want := float64(devices) / every.Seconds()
	natstest.Eventually(t, 20*time.Second, func() error {
		wall := time.Since(at0)
		rate := float64(sim.Stats().Statuses-st0.Statuses) / wall.Seconds()
		if wall < 1500*time.Millisecond || rate < 0.8*want || rate > 1.2*want {
			return fmt.Errorf("%.0f statuses/s over %v, want %.0f", rate, wall, want)
		}
		return nil
	})
	if st := sim.Stats(); st.MaxBehind > time.Second || st.Failed != 0 || st.PublishErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}
