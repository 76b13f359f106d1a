package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// answer is a response as a test reads it back.
type answer struct {
	Service   string          `json:"service"`
	RequestID string          `json:"request_id"`
	Code      int             `json:"code"`
	Msg       string          `json:"msg"`
	Values    json.RawMessage `json:"values"`
	size      int             // bytes of the line
}

// collector reads back the answers a fake transport was sent.
type collector struct {
	ft  *fakeTransport
	got map[string]answer // by request_id
}

func collect(ft *fakeTransport) *collector { return &collector{ft: ft, got: make(map[string]answer)} }

// read parses the frames sent since the last read (taking them from the
// transport); a line that is not a well-formed message fails the test.
func (c *collector) read(t *testing.T) map[string]answer {
	t.Helper()
	c.ft.mu.Lock()
	frames := c.ft.frames
	c.ft.frames = nil
	c.ft.mu.Unlock()
	for _, fr := range frames {
		for line := range bytes.SplitSeq(fr, []byte{'\n'}) {
			var a struct {
				answer
				Op string `json:"op"`
			}
			if err := json.Unmarshal(line, &a); err != nil {
				t.Fatalf("malformed line (%d bytes): %v", len(line), err)
			}
			if a.Op != "response" {
				continue
			}
			a.answer.size = len(line)
			c.got[a.RequestID] = a.answer
		}
	}
	return c.got
}

// await waits until there are answers for every id.
func (c *collector) await(t *testing.T, timeout time.Duration, ids ...string) map[string]answer {
	t.Helper()
	natstest.Eventually(t, timeout, func() error {
		got := c.read(t)
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				return fmt.Errorf("%d of %d answers", len(got), len(ids))
			}
		}
		return nil
	})
	return c.got
}

func requestLine(service, id string, args any) []byte {
	b, _ := json.Marshal(map[string]any{"op": "request", "service": service, "request_id": id, "args": args})
	return b
}

// connectDevice attaches a device session and records it in presence.
func connectDevice(t *testing.T, srv *Server, sn, typ, group string) (*Session, *fakeTransport) {
	t.Helper()
	s, ft := attach(t, srv, 1000, device(sn, typ, group))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.presence.connected(ctx, s); err != nil {
		t.Fatal(err)
	}
	return s, ft
}

// awaitKnown waits until the directory lists n devices
// (with a status when withStatus).
func awaitKnown(t *testing.T, srv *Server, n int, withStatus bool) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, func() error {
		views, err := knownViews(srv)
		if err != nil {
			return err
		}
		got := 0
		for _, v := range views {
			if !withStatus || v.StatusAt != nil {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d of %d devices in view", got, n)
		}
		return nil
	})
}

// 32 history reads of 1000 records each, in one frame, on a device whose
// events are large: each answer stays within the cap (the newest records,
// truncated), what streams into the node's in-process NATS connection is
// bounded, the connection is never a slow consumer, and another session's
// request that needs the bus is served meanwhile.
func TestHistoryFrameKeepsNATSConnection(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	var disconnects, reconnects, asyncErrs atomic.Int64
	nc, err := nats.Connect("", nats.InProcessServer(ns),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnects.Add(1) }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnects.Add(1) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			asyncErrs.Add(1)
			t.Logf("async error: %v", err)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	srv := startTestServer(t, nc, Config{})
	dev, devT := connectDevice(t, srv, "BIG-1", "dog", "g1")

	// 1000 events of 15 KB each, written by another connection.
	const n, pad = 1000, 15000
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := subjects.DeviceEvent("BIG-1")
	blob := strings.Repeat("x", pad)
	for i := range n {
		rec, _ := json.Marshal(EventRecord{SN: "BIG-1", Type: "dog", Group: "g1", At: int64(i), Event: "big", Priority: "normal",
			Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"blob":%q}`, i, blob))})
		if _, err := js.PublishAsync(subj, rec); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("events not stored")
	}

	_, adm := attach(t, srv, 1000, admin("root", "*"))
	admSess := adm.sess
	var frame [][]byte
	var ids []string
	for i := range 32 {
		id := fmt.Sprintf("h%d", i)
		ids = append(ids, id)
		frame = append(frame, requestLine("/admin/history", id, map[string]any{"sn": "BIG-1", "topic": "event", "limit": 1000}))
	}
	in0 := nc.Stats().InBytes
	admSess.HandleFrame(bytes.Join(frame, []byte{'\n'}))
	// Meanwhile a device reports its status: that needs the bus.
	dev.HandleFrame(requestLine("/device/status", "s1", map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok"}}))

	got := collect(adm).await(t, 60*time.Second, ids...)
	if a := collect(devT).await(t, 30*time.Second, "s1")["s1"]; a.Code != 0 {
		t.Errorf("status report during the history reads: %d %s", a.Code, a.Msg)
	}
	in := nc.Stats().InBytes - in0
	vz, err := ns.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	if sc := vz.SlowConsumers; sc != 0 {
		t.Errorf("nats-server saw %d slow consumers", sc)
	}
	if !nc.IsConnected() || disconnects.Load() != 0 || reconnects.Load() != 0 || nc.Stats().Reconnects != 0 {
		t.Errorf("node connection: connected %v, %d disconnects, %d reconnects", nc.IsConnected(), disconnects.Load(), reconnects.Load())
	}
	if asyncErrs.Load() != 0 {
		t.Errorf("%d async errors on the node connection", asyncErrs.Load())
	}
	ok := 0
	for _, id := range ids {
		a := got[id]
		switch a.Code {
		case 0:
			ok++
			var v struct {
				Records []struct {
					Data struct {
						I int `json:"i"`
					} `json:"data"`
				} `json:"records"`
				Truncated bool `json:"truncated"`
			}
			if err := json.Unmarshal(a.Values, &v); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			if a.size > srv.cfg.MaxAnswerBytes {
				t.Errorf("%s: answer of %d bytes, more than the cap %d", id, a.size, srv.cfg.MaxAnswerBytes)
			}
			if !v.Truncated || len(v.Records) == 0 || len(v.Records) >= n {
				t.Errorf("%s: %d records, truncated %v: want the newest that fit, truncated", id, len(v.Records), v.Truncated)
			}
			for j, r := range v.Records {
				if r.Data.I != n-1-j {
					t.Errorf("%s: record %d is event %d, want %d (newest first)", id, j, r.Data.I, n-1-j)
					break
				}
			}
		case 413, 429:
			if a.Msg == "" {
				t.Errorf("%s: code %d without a message", id, a.Code)
			}
		default:
			t.Errorf("%s: code %d %s", id, a.Code, a.Msg)
		}
	}
	if ok == 0 {
		t.Error("no history read answered")
	}
	// The backward walk reads what the answers keep: 32 answers of at most
	// the cap each, plus per read the record that did not fit, the
	// headers and the stream's info; and the node's other traffic.
	if limit := uint64(32*2*srv.cfg.MaxAnswerBytes + 1<<20); in > limit {
		t.Errorf("%d bytes came in over the node connection for the reads, more than %d", in, limit)
	}
	t.Logf("%d of 32 answered 0; %d bytes in over the node connection", ok, in)
}

// History reads past the per-session and per-node bounds wait for a slot,
// and past the queue or the wait are refused with 429 and counted.
func TestHistoryGate(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t, natstest.Connect(t, natstest.Run(t)),
		Config{HistoryReadsPerSession: 2, HistoryReadsPerNode: 3, HistoryQueue: 1, HistoryWait: 50 * time.Millisecond})
	g, a := srv.admit.history, srv.admit
	s1, _ := attach(t, srv, 10, admin("a", "*"))
	s2, _ := attach(t, srv, 10, admin("b", "*"))
	ctx := context.Background()
	mustAcquire := func(s *Session) {
		t.Helper()
		if ok, werr := g.acquire(ctx, a, s); !ok || werr != nil {
			t.Fatalf("acquire: %v %v", ok, werr)
		}
	}
	mustAcquire(s1)
	mustAcquire(s1)
	// s1 is at its bound: it waits, and gets 429 once the wait is over.
	if _, werr := g.acquire(ctx, a, s1); werr == nil || werr.Code != 429 {
		t.Fatalf("third read of one session: %v, want 429", werr)
	}
	if v := testutil.ToFloat64(a.refused[refusedHistoryWait]); v != 1 {
		t.Errorf("history_wait refusals %v, want 1", v)
	}
	mustAcquire(s2) // the node's third slot
	// The node is at its bound: one read waits (the queue holds one) and
	// gets the slot s1 frees; another finds the queue full. The wait is
	// long now, so that the waiter is still waiting however slow the box.
	g.wait = time.Minute
	done := make(chan error, 1)
	go func() {
		_, werr := g.acquire(ctx, a, s2)
		if werr != nil {
			done <- werr
			return
		}
		done <- nil
	}()
	natstest.Eventually(t, 5*time.Second, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.waiting != 1 {
			return fmt.Errorf("%d waiting", g.waiting)
		}
		return nil
	})
	if _, werr := g.acquire(ctx, a, s2); werr == nil || werr.Code != 429 {
		t.Fatalf("read beyond the queue: %v, want 429", werr)
	}
	if v := testutil.ToFloat64(a.refused[refusedHistoryQueue]); v != 1 {
		t.Errorf("history_queue_full refusals %v, want 1", v)
	}
	g.release(s1)
	if err := <-done; err != nil {
		t.Fatalf("waiting read: %v", err)
	}
	g.release(s1)
	g.release(s2)
	g.release(s2)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != 0 || g.waiting != 0 || s1.cost.historyRunning != 0 || s2.cost.historyRunning != 0 {
		t.Errorf("after release: running %d, waiting %d, sessions %d %d", g.running, g.waiting, s1.cost.historyRunning, s2.cost.historyRunning)
	}
}

func TestRecordBudget(t *testing.T) {
	t.Parallel()
	// Records with spaces and HTML characters: their size is counted as
	// they go out, compacted and escaped.
	rec := func(i int) []byte { return fmt.Appendf(nil, `{"i": %d, "s":"<%03d>"}`, i, i) }
	sent, _ := json.Marshal(json.RawMessage(rec(0)))
	per := len(sent) + 1
	tests := []struct {
		name      string
		forward   bool
		bytes     int // for the records
		limit     int
		want      string
		truncated bool
	}{
		{"backward by count", false, 1000, 3, "9,8,7", false},
		{"backward by bytes", false, 3 * per, 10, "9,8,7", true},
		{"backward all", false, 1000, 20, "9,8,7,6,5,4,3,2,1,0", false},
		{"forward by count", true, 1000, 3, "9,8,7", false},
		{"forward by bytes", true, 3 * per, 10, "9,8,7", true},
		{"forward all", true, 1000, 20, "9,8,7,6,5,4,3,2,1,0", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fixed := len(recordsOpen) + len(recordsClose) + len(truncatedTag)
			b := newRecordBudget(tc.bytes+fixed, tc.limit)
			if tc.forward {
				for i := range 10 {
					b.newer(rec(i))
				}
				b.newer([]byte(`{not json`))
				b.newestFirst()
			} else {
				for i := 9; i >= 0 && !b.full(); i-- {
					b.older(rec(i))
				}
				b.older([]byte(`{not json`))
			}
			var v struct {
				Records []struct {
					I int    `json:"i"`
					S string `json:"s"`
				} `json:"records"`
				Truncated bool `json:"truncated"`
			}
			raw := b.values()
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			var got []string
			for _, r := range v.Records {
				got = append(got, fmt.Sprint(r.I))
				if r.S != fmt.Sprintf("<%03d>", r.I) {
					t.Errorf("record %d: s %q", r.I, r.S)
				}
			}
			if strings.Join(got, ",") != tc.want || v.Truncated != tc.truncated {
				t.Errorf("got %v truncated %v, want %s truncated %v", got, v.Truncated, tc.want, tc.truncated)
			}
			if len(raw) > tc.bytes+fixed {
				t.Errorf("values of %d bytes, budget %d", len(raw), tc.bytes+fixed)
			}
			if b.skipped != 1 {
				t.Errorf("skipped %d, want 1", b.skipped)
			}
		})
	}
}

// 200 device listings in one frame, over 100 devices with 15 KB statuses:
// the first is a page cut by bytes (with next) where it was the whole 1.5
// MB listing, each answer is well-formed and within the cap, and the
// node's heap grows by a few MiB where it grew by the whole 300 MB of
// answers. Listing frame after frame, the session's listing bucket gives
// its burst in pages, then 429.
func TestDevicesFrameMemory(t *testing.T) {
	var frozen atomic.Pointer[time.Time]
	now := func() time.Time {
		if at := frozen.Load(); at != nil {
			return *at
		}
		return time.Now()
	}
	srv := startTestServer(t, natstest.Connect(t, natstest.Run(t)), Config{Now: now})
	blob := strings.Repeat("y", 15000)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range 100 {
		sn := fmt.Sprintf("M-%03d", i)
		dev, ft := connectDevice(t, srv, sn, "dog", "g1")
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dev.HandleFrame(requestLine("/device/status", "s", map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok"}, "blob": blob}))
			if a := collect(ft).await(t, 20*time.Second, "s")["s"]; a.Code != 0 {
				t.Errorf("%s: status %d %s", sn, a.Code, a.Msg)
			}
		}()
	}
	wg.Wait()
	awaitKnown(t, srv, 100, true)

	admSess, adm := attach(t, srv, 1000, admin("root", "*"))
	answers := collect(adm)
	var frame [][]byte
	for i := range 200 {
		frame = append(frame, requestLine("/admin/devices", fmt.Sprint(i), nil))
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	admSess.HandleFrame(bytes.Join(frame, []byte{'\n'}))
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("heap grew %.1f MiB; %.1f MiB allocated", float64(grew)/(1<<20), float64(allocated)/(1<<20))
	if grew > 64<<20 {
		t.Errorf("heap grew %d MiB answering one frame", grew>>20)
	}
	got := answers.read(t)
	if len(got) != 200 {
		t.Fatalf("%d answers, want 200", len(got))
	}
	// page checks a listing answered 0: a page cut by bytes, within the cap.
	page := func(name string, a answer) int {
		t.Helper()
		var v struct {
			Devices []DeviceView `json:"devices"`
			Next    string       `json:"next"`
		}
		if err := json.Unmarshal(a.Values, &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a.size > srv.cfg.MaxAnswerBytes {
			t.Errorf("%s: %d bytes, more than the cap %d", name, a.size, srv.cfg.MaxAnswerBytes)
		}
		if len(v.Devices) == 0 || len(v.Devices) == 100 || v.Next == "" {
			t.Errorf("%s: %d devices, next %q: want a page cut by bytes", name, len(v.Devices), v.Next)
		}
		return len(a.Values)
	}
	if a := got["0"]; a.Code != 0 {
		t.Errorf("first listing of the frame: %d %s, want a page", a.Code, a.Msg)
	}
	codes := map[int]int{}
	for i := range 200 {
		a := got[fmt.Sprint(i)]
		codes[a.Code]++
		switch a.Code {
		case 0:
			page(fmt.Sprint("answer ", i), a)
		case 413, 429:
			if a.Msg == "" {
				t.Errorf("answer %d: %d without a message", i, a.Code)
			}
		default:
			t.Errorf("answer %d: %d %s", i, a.Code, a.Msg)
		}
	}
	t.Logf("one frame of 200 listings: codes %v", codes)

	// Frame after frame, with the clock standing still so that the bucket
	// cannot refill however slow the machine: pages until the burst is
	// spent, then 429 with a retry time.
	at := time.Now()
	frozen.Store(&at)
	defer frozen.Store(nil)
	refused0 := testutil.ToFloat64(srv.admit.refused[refusedListBytes])
	pageBytes, pages := 0, 0
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("%d pages (%d bytes), no 429", pages, pageBytes)
		}
		id := fmt.Sprint("f", i)
		admSess.HandleFrame(requestLine("/admin/devices", id, nil))
		a := answers.await(t, 5*time.Second, id)[id]
		if a.Code == 0 {
			pageBytes += page(id, a)
			pages++
			continue
		}
		var v struct {
			RetryAfter int64 `json:"retry_after_ms"`
		}
		if err := json.Unmarshal(a.Values, &v); a.Code != 429 || err != nil || v.RetryAfter <= 0 || a.Msg == "" {
			t.Errorf("%s: %d %q %s, want 429 with retry_after_ms", id, a.Code, a.Msg, a.Values)
		}
		break
	}
	if pageBytes > srv.cfg.ListBytesBurst {
		t.Errorf("%d bytes of pages, more than the bucket's %d", pageBytes, srv.cfg.ListBytesBurst)
	}
	if v := testutil.ToFloat64(srv.admit.refused[refusedListBytes]) - refused0; v != 1 {
		t.Errorf("list_bytes refusals %v, want 1", v)
	}
	t.Logf("frame by frame: %d pages (%d bytes), then 429", pages, pageBytes)
}

// Paging through 2,500 devices with limit 1000 gives three pages with every
// serial number once, in order; the subscribe snapshot is the first page
// and its cursor goes on through /admin/devices; a cursor that is altered,
// malformed or another hub's is 400 naming cursor.
func TestDevicesPaging(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t, natstest.Connect(t, natstest.Run(t)), Config{ListBytesBurst: 64 << 20})
	const n = 2500
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range work {
				connectDevice(t, srv, fmt.Sprintf("P-%04d", i), []string{"dog", "cat"}[i%2], "g1")
			}
		})
	}
	for i := n - 1; i >= 0; i-- {
		work <- i
	}
	close(work)
	wg.Wait()
	awaitKnown(t, srv, n, false)

	admSess, adm := attach(t, srv, 1000, admin("root", "*"))
	answers := collect(adm)
	seq := 0
	call := func(service string, args any) answer {
		t.Helper()
		seq++
		id := fmt.Sprint(seq)
		admSess.HandleFrame(requestLine(service, id, args))
		return answers.await(t, 5*time.Second, id)[id]
	}
	type page struct {
		Devices []DeviceView `json:"devices"`
		Next    *string      `json:"next"`
	}
	walk := func(first answer) (sns []string, pages int) {
		t.Helper()
		a := first
		for {
			if a.Code != 0 {
				t.Fatalf("page %d: %d %s", pages+1, a.Code, a.Msg)
			}
			var p page
			if err := json.Unmarshal(a.Values, &p); err != nil {
				t.Fatal(err)
			}
			pages++
			for _, d := range p.Devices {
				sns = append(sns, d.SN)
			}
			if p.Next == nil {
				return sns, pages
			}
			if *p.Next == "" {
				t.Fatal(`next is "", want it left out`)
			}
			a = call("/admin/devices", map[string]any{"cursor": *p.Next})
		}
	}
	check := func(name string, sns []string, want func(i int) bool) {
		t.Helper()
		var exp []string
		for i := range n {
			if want(i) {
				exp = append(exp, fmt.Sprintf("P-%04d", i))
			}
		}
		if strings.Join(sns, " ") != strings.Join(exp, " ") {
			t.Errorf("%s: %d serial numbers listed, want %d, each once in order", name, len(sns), len(exp))
		}
	}

	sns, pages := walk(call("/admin/devices", map[string]any{"limit": 1000}))
	check("devices", sns, func(int) bool { return true })
	if pages != 3 {
		t.Errorf("%d pages, want 3", pages)
	}
	// The default limit is 1000 too, and the cursor remembers the filter.
	sns, pages = walk(call("/admin/devices", map[string]any{"type": "cat"}))
	check("cats", sns, func(i int) bool { return i%2 == 1 })
	if pages != 2 {
		t.Errorf("cats: %d pages, want 2", pages)
	}
	// The snapshot holds the first 1000 and goes on through /admin/devices.
	sns, pages = walk(call("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence"}}))
	check("snapshot", sns, func(int) bool { return true })
	if pages != 3 {
		t.Errorf("snapshot: %d pages, want 3", pages)
	}
	// A snapshot of explicit serials and a type, 10 to a page.
	sns, _ = walk(call("/admin/subscribe", map[string]any{"devices": []string{"P-0003", "P-2400", "P-0001"}, "types": []string{"cat"}, "limit": 10}))
	check("selectors", sns, func(i int) bool { return i%2 == 1 || i == 3 || i == 2400 })

	first := call("/admin/devices", map[string]any{"limit": 1})
	var p page
	if err := json.Unmarshal(first.Values, &p); err != nil || p.Next == nil {
		t.Fatalf("first page: %s", first.Values)
	}
	parts := strings.Split(*p.Next, ".")
	other := &Server{cfg: Config{MasterSecret: []byte("another hub's master secret")}}
	bad := map[string]string{
		"garbage":  "not a cursor",
		"altered":  parts[0] + "." + parts[1] + "x." + parts[2],
		"foreign":  other.encodeCursor(&cursor{Limit: 1000}),
		"version":  "2." + parts[1] + "." + parts[2],
		"truncate": parts[0] + "." + parts[1],
	}
	for name, c := range bad {
		a := call("/admin/devices", map[string]any{"cursor": c})
		if a.Code != 400 || !strings.Contains(a.Msg, "cursor") {
			t.Errorf("%s cursor: %d %q, want 400 naming cursor", name, a.Code, a.Msg)
		}
	}
	if a := call("/admin/devices", map[string]any{"cursor": *p.Next, "type": "cat"}); a.Code != 400 || !strings.Contains(a.Msg, "cursor") {
		t.Errorf("cursor with another filter: %d %q, want 400 naming cursor", a.Code, a.Msg)
	}
	for _, limit := range []int{0, 10001} {
		if a := call("/admin/devices", map[string]any{"limit": limit}); a.Code != 400 || !strings.Contains(a.Msg, "limit") {
			t.Errorf("limit %d: %d %q, want 400 naming limit", limit, a.Code, a.Msg)
		}
	}
}
