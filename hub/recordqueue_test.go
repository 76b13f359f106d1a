package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sentMsg is a message a fake transport was sent.
type sentMsg struct {
	Op        string          `json:"op"`
	Service   string          `json:"service"`
	RequestID string          `json:"request_id"`
	Code      int             `json:"code"`
	Values    json.RawMessage `json:"values"`
}

// awaitSent waits for a message sent to ft that match accepts.
func awaitSent(t *testing.T, ft *fakeTransport, timeout time.Duration, match func(sentMsg) bool) sentMsg {
	t.Helper()
	var got sentMsg
	natstest.Eventually(t, timeout, func() error {
		ft.mu.Lock()
		frames := append([][]byte(nil), ft.frames...)
		ft.mu.Unlock()
		for _, f := range frames {
			found := false
			wire.Lines(f, func(line []byte) {
				var m sentMsg
				if !found && json.Unmarshal(line, &m) == nil && match(m) {
					got, found = m, true
				}
			})
			if found {
				return nil
			}
		}
		return fmt.Errorf("no such message among %d frames", len(frames))
	})
	return got
}

// readLoop feeds frames to a session one at a time, as a transport's read
// goroutine does: a frame is handled only once the one before it is.
func readLoop(t *testing.T, s *Session) chan<- []byte {
	in := make(chan []byte, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range in {
			s.HandleFrame(f)
		}
	}()
	t.Cleanup(func() { close(in); <-done })
	return in
}

// TestCommandAnsweredWhileStatusWaits: a device's status report whose
// publish gets no acknowledgement (lost on its way, as during a stream's
// leader election) does not hold up the device's read loop: its answer to
// a command sent meanwhile reaches the admin at once, and the status is
// stored, once, by the publish tried again, and then answered 0.
// Before, the read loop waited for the status's acknowledgement and the
// command timed out (408), and the status was answered 503.
func TestCommandAnsweredWhileStatusWaits(t *testing.T) {
	t.Parallel()
	srv, px, ns := proxiedServer(t, Config{})
	dev, devT := attach(t, srv, 1000, device("RQ-1", "robot", "default"))
	adm, admT := attach(t, srv, 1000, admin("alice", "*"))
	devIn, admIn := readLoop(t, dev), readLoop(t, adm)

	px.dropPublishes("hub.dev.RQ-1.status", 1)
	devIn <- requestLine("/device/status", "s1", map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 80}})
	admIn <- requestLine("/admin/command", "c1", map[string]any{"sn": "RQ-1", "service": "/cmd/beep", "timeout_ms": 1500})

	cmd := awaitSent(t, devT, 5*time.Second, func(m sentMsg) bool { return m.Op == "request" && m.Service == "/cmd/beep" })
	devIn <- []byte(`{"op":"response","service":"/cmd/beep","request_id":"` + cmd.RequestID + `","code":0,"result":true,"values":{"beeped":true}}`)
	res := awaitSent(t, admT, 5*time.Second, func(m sentMsg) bool { return m.RequestID == "c1" })
	if res.Code != 0 || string(res.Values) != `{"beeped":true}` {
		t.Fatalf("command answered %+v, want code 0 with the device's values", res)
	}
	// The status's answer came after the command's (it waits at least
	// one publish attempt), and says stored.
	st := awaitSent(t, devT, 10*time.Second, func(m sentMsg) bool { return m.RequestID == "s1" })
	if st.Code != 0 {
		t.Fatalf("status answered %+v, want 0 (stored by the publish tried again)", st)
	}
	js, _ := jetstream.New(natstest.Connect(t, ns))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := js.Stream(ctx, StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("HUB_STATUS holds %d records, want 1", n)
	}
	if n := testutil.ToFloat64(srv.metrics.recordRetries); n < 1 {
		t.Fatalf("record_store_retries_total = %v, want at least 1", n)
	}
}

// TestRecordsInOrderAndBounded: records queued on a session are stored in
// the order they came, each answered once stored; one more than
// MaxPendingRecords waiting is refused at once with 429 and counted.
func TestRecordsInOrderAndBounded(t *testing.T) {
	t.Parallel()
	srv, px, ns := proxiedServer(t, Config{MaxPendingRecords: 3})
	dev, devT := attach(t, srv, 1000, device("RQ-2", "robot", "default"))
	in := readLoop(t, dev)

	// The first publish is lost: the three records wait behind it.
	px.dropPublishes("hub.dev.RQ-2.", 1)
	in <- []byte(string(requestLine("/device/status", "1", map[string]any{"n": 1})) + "\n" +
		string(requestLine("/device/event", "2", map[string]any{"event": "threshold", "data": map[string]any{"n": 2}})) + "\n" +
		string(requestLine("/device/status", "3", map[string]any{"n": 3})) + "\n" +
		string(requestLine("/device/status", "4", map[string]any{"n": 4})))
	if m := awaitSent(t, devT, 5*time.Second, func(m sentMsg) bool { return m.RequestID == "4" }); m.Code != wire.CodeRateLimited {
		t.Fatalf("fourth record answered %+v, want 429", m)
	}
	if n := testutil.ToFloat64(srv.metrics.recordsRefused.WithLabelValues(recordQueueFull)); n != 1 {
		t.Fatalf("records_refused_total{queue_full} = %v, want 1", n)
	}
	for _, id := range []string{"1", "2", "3"} {
		if m := awaitSent(t, devT, 10*time.Second, func(m sentMsg) bool { return m.RequestID == id }); m.Code != 0 {
			t.Fatalf("record %s answered %+v, want 0", id, m)
		}
	}
	// Stored in order: status 1, event 2, status 3, by their stream
	// sequences' times.
	js, _ := jetstream.New(natstest.Connect(t, ns))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var times []time.Time
	for _, s := range []struct {
		stream string
		seq    uint64
	}{{StreamStatus, 1}, {StreamEvents, 1}, {StreamStatus, 2}} {
		st, err := js.Stream(ctx, s.stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, s.seq)
		if err != nil {
			t.Fatalf("%s seq %d: %v", s.stream, s.seq, err)
		}
		times = append(times, m.Time)
	}
	st, _ := js.Stream(ctx, StreamStatus)
	first, _ := st.GetMsg(ctx, 1)
	if !json.Valid(first.Data) || !containsN(first.Data, 1) {
		t.Fatalf("first status stored is %s, want n 1", first.Data)
	}
	if times[0].After(times[1]) || times[1].After(times[2]) {
		t.Fatalf("records stored out of order: %v", times)
	}
}

func containsN(data []byte, n int) bool {
	var r struct {
		Status struct {
			N int `json:"n"`
		} `json:"status"`
	}
	return json.Unmarshal(data, &r) == nil && r.Status.N == n
}
