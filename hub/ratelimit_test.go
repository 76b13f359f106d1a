package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
)

// answers decodes every message of every frame a fake transport holds.
func (f *fakeTransport) answers(t *testing.T) []wire.Message {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []wire.Message
	for _, fr := range f.frames {
		for _, line := range bytes.Split(fr, []byte("\n")) {
			var m struct {
				Op        string `json:"op"`
				RequestID string `json:"request_id"`
				Code      int    `json:"code"`
				Msg       string `json:"msg"`
			}
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("bad frame line %q: %v", line, err)
			}
			out = append(out, wire.Message{Op: m.Op, RequestID: m.RequestID, Code: m.Code, Msg: m.Msg})
		}
	}
	return out
}

func pingFrame(from, n int, op string) []byte {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"op":%q,"service":"/ping","request_id":"%d"}`, op, from+i))
	}
	return []byte(strings.Join(lines, "\n"))
}

// Past the rate limit the rest of a frame is not served, and each of its
// requests still gets exactly one answer: a 429 with its request_id.
func TestRateLimitedFrameAnswersEach(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	srv := startTestServer(t, natstest.Connect(t, ns), Config{MessageRate: 1, MessageBurst: 5})
	s, ft := attach(t, srv, 100, device("RL1", "dog", "g1"))
	s.HandleFrame(pingFrame(0, 100, "request"))
	got := ft.answers(t)
	if len(got) != 100 {
		t.Fatalf("got %d answers to 100 requests", len(got))
	}
	for i, a := range got {
		want := 0
		if i >= 5 {
			want = wire.CodeRateLimited
		}
		if a.Code != want || a.RequestID != fmt.Sprint(i) {
			t.Fatalf("answer %d = %+v, want code %d for request %d", i, a, want, i)
		}
	}
	if code := ft.closeCode(); code != 0 {
		t.Fatalf("closed with %d after one limited frame", code)
	}
}

// A session that stays over its rate limit is closed with 1008, whatever it
// sends: requests, responses to no command, or repeated auth requests.
func TestSustainedOverLimitCloses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		frame func(i int) []byte
	}{
		{"requests", func(i int) []byte { return pingFrame(i*10, 10, "request") }},
		{"responses", func(i int) []byte { return pingFrame(i*10, 10, "response") }},
		{"reauth", func(i int) []byte {
			return []byte(`{"op":"request","service":"/auth/token","request_id":"a","args":{"token":"x"}}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Run(t)
			srv := startTestServer(t, natstest.Connect(t, ns), Config{
				MessageRate: 20, MessageBurst: 20, RateLimitClose: 500 * time.Millisecond, AbuseBurst: 1 << 20,
			})
			s, ft := attach(t, srv, 1<<20, device("RL2", "dog", "g1"))
			deadline := time.Now().Add(20 * time.Second)
			frames := 0
			for ft.closeCode() == 0 && time.Now().Before(deadline) {
				s.HandleFrame(tc.frame(frames))
				frames++
			}
			if code := ft.closeCode(); code != wire.ClosePolicy {
				t.Fatalf("close code %d after %d frames, want %d", code, frames, wire.ClosePolicy)
			}
			// Shedding: the read side was paused after each limited frame,
			// so the flood took far fewer frames than a free-running loop.
			if frames > 2000 {
				t.Fatalf("%d frames handled before the close: the flood was not slowed", frames)
			}
		})
	}
}

// A session that goes over its limit now and then, with breaks, is never
// closed for it.
func TestBurstsWithBreaksStayOpen(t *testing.T) {
	t.Parallel()
	s := &Session{srv: &Server{cfg: Config{RateLimitClose: 10 * time.Second}}}
	now := time.Unix(1000, 0)
	for range 100 {
		for range 10 {
			if s.overLimit(now) {
				t.Fatal("closed although each stretch over the limit was short")
			}
			now = now.Add(50 * time.Millisecond)
		}
		now = now.Add(1500 * time.Millisecond) // a break of more than a second
	}
	for range 300 {
		now = now.Add(50 * time.Millisecond)
		if s.overLimit(now) {
			return
		}
	}
	t.Fatal("15 s over the limit without a break did not close")
}

// The answers to one frame are bounded in bytes: what would pass the bound
// is a 413, and the requests after it are not served.
func TestFrameAnswerBudget(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	srv := startTestServer(t, natstest.Connect(t, ns), Config{MaxAnswerBytes: 1000})
	s, ft := attach(t, srv, 100, admin("a", "*"))
	s.HandleFrame(pingFrame(0, 40, "request"))
	got := ft.answers(t)
	if len(got) != 40 {
		t.Fatalf("got %d answers to 40 requests", len(got))
	}
	ok, large := 0, 0
	for _, a := range got {
		switch a.Code {
		case 0:
			if large > 0 {
				t.Fatal("a request served after the budget was spent")
			}
			ok++
		case wire.CodeTooLarge:
			large++
		default:
			t.Fatalf("answer %+v", a)
		}
	}
	ft.mu.Lock()
	size := len(ft.frames[0])
	ft.mu.Unlock()
	if ok == 0 || large == 0 || size > 1000+40*300 {
		t.Fatalf("%d served, %d refused, %d bytes in the frame", ok, large, size)
	}
}
