package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// watchNode starts a hub named id on its own connection to ns, its watch
// subscriptions lingering for linger (0: the default) once left.
func watchNode(t *testing.T, ns *server.Server, id string, cfg Config, linger time.Duration) (*Server, *nats.Conn) {
	t.Helper()
	nc := natstest.Connect(t, ns)
	srv := newNodeServer(t, nc, id, cfg)
	if linger > 0 {
		srv.interest.watch.linger = linger
	}
	runServer(t, srv)
	return srv, nc
}

// pushLog keeps the pushes a fake session got, by service.
type pushLog struct {
	ft     *fakeTransport
	onLine func(sentLine) // sees every line, when set; called by read

	mu    sync.Mutex
	lines []sentLine
}

// read takes the frames sent so far and returns every push so far.
func (p *pushLog) read(t *testing.T) []sentLine {
	t.Helper()
	ls := checkFrames(t, p.ft.take())
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range ls {
		if p.onLine != nil {
			p.onLine(l)
		}
		if l.Op == wire.OpPush {
			p.lines = append(p.lines, l)
		}
	}
	return append([]sentLine(nil), p.lines...)
}

// eventKey is what identifies one published event in a test: its device
// and the seq in its data.
func eventKey(t *testing.T, l sentLine) string {
	t.Helper()
	var r struct {
		SN    string `json:"sn"`
		Event string `json:"event"`
		Data  struct {
			Seq int `json:"seq"`
		} `json:"data"`
	}
	if err := json.Unmarshal(l.Values, &r); err != nil {
		t.Fatalf("push %s: %v", l.Values, err)
	}
	return fmt.Sprintf("%s/%s/%d", r.SN, r.Event, r.Data.Seq)
}

// fleetRecord is a status or event record of device i of a simulated
// fleet: group g<i%10>, type t<i%4>.
func fleetRecord(topic string, i, seq int) (sn, group, typ string, body []byte) {
	sn, group, typ = fmt.Sprintf("F-%04d", i), fmt.Sprintf("g%d", i%10), fmt.Sprintf("t%d", i%4)
	if topic == subjects.WatchStatus {
		body, _ = json.Marshal(StatusRecord{SN: sn, Type: typ, Group: group, At: int64(seq), Status: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, seq))})
	} else {
		body, _ = json.Marshal(EventRecord{SN: sn, Type: typ, Group: group, At: int64(seq), Event: "e", Priority: "normal", Data: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, seq))})
	}
	return sn, group, typ, body
}

// flood plays another node of n devices: each device's record of topic
// stored on its stream and published on its watch subject, as the node
// holding it does.
func flood(t *testing.T, pub *nats.Conn, topic string, n, seq int) {
	t.Helper()
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		sn, group, typ, body := fleetRecord(topic, i, seq)
		stream, _ := subjects.DeviceStatus(sn)
		if topic == subjects.WatchEvent {
			stream, _ = subjects.DeviceEvent(sn)
		}
		if _, err := js.PublishAsync(stream, body); err != nil {
			t.Fatal(err)
		}
		subj, _ := subjects.Watch(group, typ, sn, topic)
		if err := pub.Publish(subj, body); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not acknowledge the flood")
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchInterestOnly: a node receives from the bus only the records its
// sessions watch. With no session it receives nothing while another node's
// 1,000 devices report; with an admin subscribed to one group, one device
// of it and one type, it receives exactly the records of that group and
// that type, each once, and the admin gets each once.
func TestWatchInterestOnly(t *testing.T) {
	ns := natstest.Run(t)
	srv, nc := watchNode(t, ns, "watcher", Config{CoalesceWindow: time.Nanosecond}, 0)
	pub := natstest.Connect(t, ns)
	const devices = 1000

	// A probe the node is known to have received: every message the server
	// routed to it before the probe has arrived too.
	probe := func(adm *pushLog, seq int) {
		t.Helper()
		body, _ := json.Marshal(EventRecord{SN: "F-0000", Type: "t0", Group: "g0", At: 1, Event: "probe", Priority: "normal", Data: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, seq))})
		subj, _ := subjects.Watch("g0", "t0", "F-0000", subjects.WatchEvent)
		if err := pub.Publish(subj, body); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("F-0000/probe/%d", seq)
		natstest.Eventually(t, 10*time.Second, func() error {
			for _, l := range adm.read(t) {
				if eventKey(t, l) == want {
					return nil
				}
			}
			return fmt.Errorf("probe %d not received", seq)
		})
	}

	// No session: nothing arrives, whatever the fleet reports.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := nc.Stats().InMsgs
	flood(t, pub, subjects.WatchStatus, devices, 1)
	flood(t, pub, subjects.WatchEvent, devices, 1)
	// A session watching one device, subscribed only now, sees the probe:
	// whatever the server sent the node before it has arrived.
	s, ft := attach(t, srv, 1<<20, admin("root", "*"))
	adm := &pushLog{ft: ft}
	s.HandleFrame(requestLine("/admin/subscribe", "p", map[string]any{"devices": []string{"F-0000"}, "topics": []string{"event"}}))
	probe(adm, 0)
	idle := nc.Stats().InMsgs - before
	t.Logf("idle node: %d messages in while %d devices reported a status and an event", idle, devices)
	if idle > 50 {
		t.Fatalf("a node with no session received %d messages while the fleet reported", idle)
	}

	// One group, one device of it, one type: the node gets the union, once.
	s.HandleFrame(requestLine("/admin/subscribe", "s", map[string]any{
		"groups": []string{"g0"}, "devices": []string{"F-0000", "F-0010"}, "types": []string{"t1"}, "topics": []string{"event"},
	}))
	want := map[string]bool{}
	for i := range devices {
		if i%10 == 0 || i%4 == 1 {
			want[fmt.Sprintf("F-%04d/e/2", i)] = true
		}
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if srv.interest.watch.size() != 4 { // g0, F-0000, F-0010, t1
			return fmt.Errorf("%d watch subscriptions", srv.interest.watch.size())
		}
		return nil
	})
	_ = adm.read(t)
	adm.mu.Lock()
	adm.lines = nil
	adm.mu.Unlock()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before = nc.Stats().InMsgs
	flood(t, pub, subjects.WatchStatus, devices, 2) // status: not watched
	flood(t, pub, subjects.WatchEvent, devices, 2)
	probe(adm, 1)
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := len(adm.read(t)); n < len(want)+1 {
			return fmt.Errorf("%d of %d pushes", n, len(want)+1)
		}
		return nil
	})
	probe(adm, 2)
	got := map[string]int{}
	for _, l := range adm.read(t) {
		if l.Service != "/push/event" {
			t.Fatalf("push %+v", l)
		}
		got[eventKey(t, l)]++
	}
	for k := range want {
		if got[k] != 1 {
			t.Errorf("event %s delivered %d times", k, got[k])
		}
	}
	for k, n := range got {
		if !want[k] && !strings.Contains(k, "/probe/") {
			t.Errorf("event %s (not watched) delivered %d times", k, n)
		}
	}
	in := nc.Stats().InMsgs - before
	t.Logf("watching node: %d messages in for %d watched events of %d devices", in, len(want), devices)
	if in < uint64(len(want)) || in > uint64(len(want))+50 {
		t.Fatalf("node received %d messages for %d watched records", in, len(want))
	}
}

// TestWatchChurnExactlyOnce: an admin on one node watches group g1 of
// devices held by another node, under selectors that overlap (all, the
// group, one device, one type) and change while the devices report. Every
// record of g1 reaches the admin exactly once, as long as some selector
// covers it the whole time; records of g2 at most once.
func TestWatchChurnExactlyOnce(t *testing.T) {
	ns := natstest.Run(t)
	limits := Config{
		CoalesceWindow: time.Nanosecond, EventRate: 1e6, EventBurst: 1 << 20, StatusRate: 1e6, StatusBurst: 1 << 20,
		MessageRate: 1e6, MessageBurst: 1 << 20, AbuseBurst: 1 << 20,
	}
	// A short linger: subscriptions are drained while the records flow.
	watcher, _ := watchNode(t, ns, "watcher", limits, 20*time.Millisecond)
	holder, _ := watchNode(t, ns, "holder", limits, 0)

	type dev struct {
		sn, typ, group string
		s              *Session
		answers        *collector
	}
	devs := []*dev{{sn: "C-1", typ: "t", group: "g1"}, {sn: "C-2", typ: "u", group: "g1"}, {sn: "C-3", typ: "t", group: "g2"}}
	for _, d := range devs {
		s, ft := attach(t, holder, 1<<20, device(d.sn, d.typ, d.group))
		d.s, d.answers = s, collect(ft)
	}
	s, ft := attach(t, watcher, 1<<20, admin("root", "*"))
	adm := &pushLog{ft: ft}
	// Every step must take effect, in order: one refused would leave g1
	// uncovered for a while.
	var answered []sentLine
	adm.onLine = func(l sentLine) {
		if l.Op == wire.OpResponse {
			answered = append(answered, l)
		}
	}
	request := func(service string, args map[string]any) {
		s.HandleFrame(requestLine(service, "x", args))
		settleFor(s, 5*time.Second)
		natstest.Eventually(t, 5*time.Second, func() error {
			adm.read(t)
			if len(answered) == 0 {
				return fmt.Errorf("%s not answered", service)
			}
			return nil
		})
		if l := answered[0]; l.Code != 0 {
			t.Fatalf("%s %v: %d %s", service, args, l.Code, l.Msg)
		}
		answered = answered[1:]
	}
	request("/admin/subscribe", map[string]any{"groups": []string{"g1"}, "topics": []string{"event", "status"}})
	natstest.Eventually(t, 5*time.Second, func() error {
		if watcher.interest.watch.size() != 2 {
			return fmt.Errorf("%d watch subscriptions", watcher.interest.watch.size())
		}
		return nil
	})

	const records = 300
	var producers sync.WaitGroup
	for _, d := range devs {
		producers.Add(1)
		go func() {
			defer producers.Done()
			for i := range records {
				d.s.HandleFrame(requestLine("/device/event", fmt.Sprint(i), map[string]any{"event": "e", "data": map[string]any{"seq": i}}))
				d.s.HandleFrame(requestLine("/device/status", fmt.Sprint("s", i), map[string]any{"seq": i}))
				// One at a time, so the device's records are stored in order.
				natstest.Eventually(t, 10*time.Second, func() error {
					got := d.answers.read(t)
					for _, id := range []string{fmt.Sprint(i), fmt.Sprint("s", i)} {
						if a, ok := got[id]; !ok {
							return fmt.Errorf("record %s not answered", id)
						} else if a.Code != 0 {
							return fmt.Errorf("record %s: %d %s", id, a.Code, a.Msg)
						}
					}
					return nil
				})
			}
		}()
	}
	done := make(chan struct{})
	go func() { producers.Wait(); close(done) }()
	// Churn: g1 stays covered by the group or by all at every moment.
	// A step marked drain waits until the subscriptions it left are drained
	// (the other selectors still covering g1).
	steps := []struct {
		service string
		args    map[string]any
		drain   bool
	}{
		{"/admin/subscribe", map[string]any{"all": true, "topics": []string{"event", "status"}}, false},
		{"/admin/unsubscribe", map[string]any{"groups": []string{"g1"}, "topics": []string{"event", "status"}}, true},
		{"/admin/subscribe", map[string]any{"devices": []string{"C-1"}, "types": []string{"t"}, "topics": []string{"event", "status"}}, false},
		{"/admin/subscribe", map[string]any{"groups": []string{"g1"}, "topics": []string{"event", "status"}}, false},
		{"/admin/unsubscribe", map[string]any{"all": true, "topics": []string{"event", "status"}}, true},
		{"/admin/unsubscribe", map[string]any{"devices": []string{"C-1"}, "types": []string{"t"}, "topics": []string{"event", "status"}}, false},
	}
	drained := func() int {
		watcher.interest.watch.mu.Lock()
		defer watcher.interest.watch.mu.Unlock()
		return watcher.interest.watch.drained
	}
	rounds := 0
churn:
	for {
		for _, st := range steps {
			select {
			case <-done:
				break churn
			default:
			}
			before := drained()
			request(st.service, st.args)
			if st.drain {
				natstest.Eventually(t, 5*time.Second, func() error {
					if drained() < before+2 {
						return fmt.Errorf("not drained yet")
					}
					return nil
				})
			}
		}
		rounds++
	}
	t.Logf("%d churn rounds, %d subscriptions drained, while %d devices sent %d events each", rounds, drained(), len(devs), records)
	var got map[string]int
	var statuses map[string][]int // by device, in the order pushed
	defer func() {
		if t.Failed() {
			for _, r := range dropReasons {
				t.Logf("dropped %s: %v", r, testutil.ToFloat64(watcher.metrics.pushesDropped.WithLabelValues(r)))
			}
		}
	}()
	natstest.Eventually(t, 10*time.Second, func() error {
		got, statuses = map[string]int{}, map[string][]int{}
		for _, l := range adm.read(t) {
			switch l.Service {
			case "/push/event":
				got[eventKey(t, l)]++
			case "/push/status":
				var r struct {
					SN     string `json:"sn"`
					Status struct{ Seq int }
				}
				if err := json.Unmarshal(l.Values, &r); err != nil {
					t.Fatalf("status push %s", l.Values)
				}
				statuses[r.SN] = append(statuses[r.SN], r.Status.Seq)
			}
		}
		for _, d := range devs[:2] {
			for i := range records {
				if got[fmt.Sprintf("%s/e/%d", d.sn, i)] == 0 {
					return fmt.Errorf("%s event %d not delivered", d.sn, i)
				}
			}
			if st := statuses[d.sn]; len(st) == 0 || st[len(st)-1] != records-1 {
				return fmt.Errorf("%s: last status not delivered", d.sn)
			}
		}
		return nil
	})
	for k, n := range got {
		if n != 1 {
			t.Errorf("event %s delivered %d times", k, n)
		}
	}
	// Statuses are coalesced (the latest wins), so some may be skipped;
	// none comes twice or out of order.
	for sn, st := range statuses {
		for i := 1; i < len(st); i++ {
			if st[i] <= st[i-1] {
				t.Errorf("%s: status %d after %d", sn, st[i], st[i-1])
			}
		}
		t.Logf("%s: %d of %d statuses pushed", sn, len(st), records)
	}
	t.Logf("%v statuses coalesced", testutil.ToFloat64(watcher.metrics.statusCoalesced))
	if rounds == 0 {
		t.Fatalf("no churn while the records flowed")
	}
}

// TestWatchMalformed: a record on a watch subject that no hub could have
// written, or that is not the one its subject names, is dropped and
// counted, and reaches nobody.
func TestWatchMalformed(t *testing.T) {
	ns := natstest.Run(t)
	srv, _ := watchNode(t, ns, "watcher", Config{CoalesceWindow: time.Nanosecond}, 0)
	pub := natstest.Connect(t, ns)
	s, ft := attach(t, srv, 1<<20, admin("root", "*"))
	adm := &pushLog{ft: ft}
	s.HandleFrame(requestLine("/admin/subscribe", "s", map[string]any{"all": true}))
	dropped := srv.metrics.pushesDropped.WithLabelValues(dropInvalidRecord)
	base := testutil.ToFloat64(dropped)
	bad := []struct{ subject, body string }{
		{"hub.watch.g1.dog.M-1.status", `not json`},
		{"hub.watch.g1.dog.M-1.status", `{"sn":"M-1","type":"dog","group":"g1","at":1,"status":[1]}`},
		{"hub.watch.g1.dog.M-1.event", `{"sn":"M-1","type":"dog","group":"g1","at":1,"event":"e","priority":"urgent","data":{}}`},
		{"hub.watch.g1.dog.M-1.presence", `{"sn":"M-1","type":"dog","group":"g1","online":true,"reason":"because","at":1}`},
		// Valid records, on a subject that names another group, type or device.
		{"hub.watch.g1.dog.M-1.status", `{"sn":"M-1","type":"dog","group":"g2","at":1,"status":{}}`},
		{"hub.watch.g1.dog.M-1.event", `{"sn":"M-2","type":"dog","group":"g1","at":1,"event":"e","priority":"normal","data":{}}`},
		{"hub.watch.g1.dog.M-1.presence", `{"sn":"M-1","type":"cat","group":"g1","online":true,"reason":"connected","at":1}`},
		{"hub.watch.g1.dog.M-1.event", `{"sn":"M-1","type":"dog","group":"g1","at":1,"event":"e","priority":"normal","data":{}}`},
	}
	for _, b := range bad[:len(bad)-1] {
		if err := pub.Publish(b.subject, []byte(b.body)); err != nil {
			t.Fatal(err)
		}
	}
	// The last is valid and on its own subject: it arrives, after the others.
	if err := pub.Publish(bad[len(bad)-1].subject, []byte(bad[len(bad)-1].body)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if n := testutil.ToFloat64(dropped) - base; n != float64(len(bad)-1) {
			return fmt.Errorf("%v of %d dropped", n, len(bad)-1)
		}
		if n := len(adm.read(t)); n != 1 {
			return fmt.Errorf("%d pushes", n)
		}
		return nil
	})
	if l := adm.read(t); len(l) != 1 || l[0].Service != "/push/event" || !sameValues(l[0].Values, []byte(bad[len(bad)-1].body)) {
		t.Fatalf("pushes %+v", l)
	}
}

// TestWatchAcrossNodes: a status, an event and presence records stored by
// the node holding a device reach an admin on another node, each once,
// with the push id of its stored record; a node whose sessions leave stops
// receiving.
func TestWatchAcrossNodes(t *testing.T) {
	ns := natstest.Run(t)
	limits := Config{CoalesceWindow: time.Nanosecond}
	watcher, wnc := watchNode(t, ns, "watcher", limits, 100*time.Millisecond)
	holder, _ := watchNode(t, ns, "holder", limits, 0)
	s, ft := attach(t, watcher, 1<<20, admin("root", "*"))
	adm := &pushLog{ft: ft}
	s.HandleFrame(requestLine("/admin/subscribe", "s", map[string]any{"types": []string{"dog"}}))
	settleFor(s, 5*time.Second)

	d, dft := connectDevice(t, holder, "X-1", "dog", "g1")
	answers := collect(dft)
	d.HandleFrame(requestLine("/device/status", "1", map[string]any{"custom": 1}))
	d.HandleFrame(requestLine("/device/event", "2", map[string]any{"event": "fall", "priority": "high"}))
	answers.await(t, 5*time.Second, "1", "2")
	natstest.Eventually(t, 5*time.Second, func() error {
		if n := len(adm.read(t)); n != 3 {
			return fmt.Errorf("%d pushes", n)
		}
		return nil
	})
	byService := map[string]sentLine{}
	for _, l := range adm.read(t) {
		byService[l.Service] = l
	}
	if p, ok := byService["/push/presence"]; !ok || !strings.HasPrefix(p.ID, "p") {
		t.Fatalf("presence push %+v", p)
	}
	if p, ok := byService["/push/event"]; !ok || !strings.HasPrefix(p.ID, "e") {
		t.Fatalf("event push %+v", p)
	}
	if _, ok := byService["/push/status"]; !ok {
		t.Fatalf("no status push: %+v", byService)
	}

	// The admin leaves: the watch subscriptions go, and the node receives
	// nothing more of the device.
	s.HandleFrame(requestLine("/admin/unsubscribe", "u", map[string]any{"types": []string{"dog"}}))
	natstest.Eventually(t, 5*time.Second, func() error {
		if n := watcher.interest.watch.size(); n != 0 {
			return fmt.Errorf("%d watch subscriptions", n)
		}
		return nil
	})
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := wnc.Stats().InMsgs
	for i := range 100 {
		d.HandleFrame(requestLine("/device/status", fmt.Sprint(10+i), map[string]any{"seq": i}))
		answers.await(t, 5*time.Second, fmt.Sprint(10+i))
	}
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if in := wnc.Stats().InMsgs - before; in > 20 {
		t.Fatalf("a node nobody watches through received %d messages for 100 statuses", in)
	}
}

// TestWatchScopedToVisibleGroups: a viewer who may see only g3 subscribes
// to everything and to type t1. The node watches g3 alone (one pattern
// for all, one for t1 within g3), so it receives only g3's records of a
// fleet of ten groups: its cost follows what the viewer may be shown.
// On unsubscribing, the same patterns are released.
func TestWatchScopedToVisibleGroups(t *testing.T) {
	ns := natstest.Run(t)
	srv, nc := watchNode(t, ns, "scoped", Config{CoalesceWindow: time.Nanosecond}, time.Millisecond)
	pub := natstest.Connect(t, ns)
	const devices = 1000

	s, ft := attach(t, srv, 1<<20, &Identity{Role: auth.RoleViewer, User: "v", Groups: []string{"g3"}})
	adm := &pushLog{ft: ft}
	s.HandleFrame(requestLine("/admin/subscribe", "a", map[string]any{"all": true, "topics": []string{"event"}}))
	s.HandleFrame(requestLine("/admin/subscribe", "t", map[string]any{"types": []string{"t1"}, "topics": []string{"event"}}))
	natstest.Eventually(t, 5*time.Second, func() error {
		srv.interest.watch.mu.Lock()
		defer srv.interest.watch.mu.Unlock()
		want := map[watchKey]bool{{"group:g3", topicEvent}: true, {"gtype:g3.t1", topicEvent}: true}
		for k, e := range srv.interest.watch.subs {
			if e.refs > 0 && !want[k] {
				return fmt.Errorf("watches %v", k)
			}
			delete(want, k)
		}
		if len(want) > 0 {
			return fmt.Errorf("does not watch %v", want)
		}
		return nil
	})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := nc.Stats().InMsgs
	flood(t, pub, subjects.WatchEvent, devices, 1)
	want := devices / 10 // the devices of g3
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := len(adm.read(t)); n < want {
			return fmt.Errorf("%d of %d pushes", n, want)
		}
		return nil
	})
	got := map[string]int{}
	for _, l := range adm.read(t) {
		var rec EventRecord
		if err := json.Unmarshal(l.Values, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Group != "g3" {
			t.Errorf("viewer of g3 got an event of %s", rec.Group)
		}
		got[rec.SN]++
	}
	for sn, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", sn, n)
		}
	}
	// The event of a t1 device in g3 matches both patterns; the node's
	// queue group takes it once. Nothing of the other nine groups came.
	if in := nc.Stats().InMsgs - before; in < uint64(want) || in > uint64(want)+20 {
		t.Fatalf("node received %d messages for the %d records the viewer may see", in, want)
	}

	s.HandleFrame(requestLine("/admin/unsubscribe", "u", map[string]any{"all": true, "topics": []string{"event"}}))
	s.HandleFrame(requestLine("/admin/unsubscribe", "v", map[string]any{"types": []string{"t1"}, "topics": []string{"event"}}))
	natstest.Eventually(t, 5*time.Second, func() error {
		if n := srv.interest.watch.size(); n != 0 {
			return fmt.Errorf("%d watch subscriptions left", n)
		}
		return nil
	})
}
