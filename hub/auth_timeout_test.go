package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nuid"
)

// deviceAuthFrame is a signed /auth/device request for the test servers'
// master secret.
func deviceAuthFrame(t *testing.T, srv *Server, sn, sig string) []byte {
	t.Helper()
	ts, nonce := time.Now().Unix(), nuid.Next()
	if sig == "" {
		sig = auth.Sign(auth.DeviceKey(srv.cfg.MasterSecret, sn), sn, ts, nonce)
	}
	b, err := json.Marshal(map[string]any{"op": "request", "service": "/auth/device", "request_id": "a",
		"args": map[string]any{"sn": sn, "ts": ts, "nonce": nonce, "sig": sig}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answerCode returns the code of the response to request id "a" among
// the frames sent, if there is one.
func (f *fakeTransport) answerCode() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fr := range f.frames {
		for _, line := range bytes.Split(fr, []byte("\n")) {
			var m struct {
				Op        string `json:"op"`
				RequestID string `json:"request_id"`
				Code      int    `json:"code"`
			}
			if json.Unmarshal(line, &m) == nil && m.Op == "response" && m.RequestID == "a" {
				return m.Code, true
			}
		}
	}
	return 0, false
}

// TestAuthTimeoutHeldWhileServed: a device's auth request, sent in time,
// waits on a JetStream that stalls longer than the auth timeout (its nonce
// claim reaches the server, the answer waits): the session is not closed
// with 1008, and gets its answer once JetStream answers. A failed auth
// request restarts what was left of the timeout.
func TestAuthTimeoutHeldWhileServed(t *testing.T) {
	t.Parallel()
	const authTimeout = 300 * time.Millisecond
	srv, px, _ := proxiedServer(t, Config{AuthTimeout: authTimeout})

	open := func() (*Session, *fakeTransport) {
		ft := &fakeTransport{limit: 16}
		s := srv.Open(ft, "test")
		ft.mu.Lock()
		ft.sess = s
		ft.mu.Unlock()
		return s, ft
	}
	s, ft := open()
	px.stallAtPublish("$KV." + schema.BucketNonces + ".")
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.HandleFrame(deviceAuthFrame(t, srv, "AT-1", ""))
	}()
	// JetStream stays silent for three auth timeouts.
	time.Sleep(3 * authTimeout)
	if code := ft.closeCode(); code != 0 {
		t.Fatalf("closed with %d while its auth request was being served", code)
	}
	px.resume()
	<-served
	if code, ok := ft.answerCode(); !ok || code != 0 {
		t.Fatalf("answer %d (%v), want success", code, ok)
	}
	if s.Identity() == nil {
		t.Fatal("not authenticated")
	}
	time.Sleep(2 * authTimeout)
	if code := ft.closeCode(); code != 0 {
		t.Fatalf("authenticated session closed with %d", code)
	}

	// A failed auth request does not stop the timeout for good.
	_, ft2 := open()
	ft2.sess.HandleFrame(deviceAuthFrame(t, srv, "AT-2", "00"))
	if code, _ := ft2.answerCode(); code != wire.CodeUnauthorized {
		t.Fatalf("answer %d, want 401", code)
	}
	natstest.Eventually(t, 5*authTimeout, func() error {
		if code := ft2.closeCode(); code != wire.ClosePolicy {
			return fmt.Errorf("close code %d, want %d", code, wire.ClosePolicy)
		}
		return nil
	})
}
