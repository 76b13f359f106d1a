package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
)

// loginFrame is an /auth/login request with request id "a".
func loginFrame(t *testing.T, user, password string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"op": "request", "service": "/auth/login", "request_id": "a",
		"args": map[string]any{"username": user, "password": password}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openFrom opens a session on a fake transport for a client at remote.
func openFrom(srv *Server, remote string) (*Session, *fakeTransport) {
	ft := &fakeTransport{limit: 16}
	s := srv.Open(ft, remote)
	ft.mu.Lock()
	ft.sess = s
	ft.mu.Unlock()
	return s, ft
}

// TestAuthTimeoutHeldForQueuedLogins: while every bcrypt slot is taken,
// many sessions send their login just before their auth timeout falls.
// The logins wait for a slot much longer than the timeout: none of the
// sessions is closed with 1008 while its request waits, and each gets its
// answer (a success) once bcrypt is free again.
func TestAuthTimeoutHeldForQueuedLogins(t *testing.T) {
	t.Parallel()
	const (
		authTimeout = 400 * time.Millisecond
		sessions    = 20
	)
	srv := newTestServer(t)
	srv.cfg.AuthTimeout = authTimeout

	// Take every bcrypt slot, as a flood of logins would.
	for range cap(srv.bcrypt) {
		srv.bcrypt <- struct{}{}
	}
	released := false
	release := func() {
		if !released {
			released = true
			for range cap(srv.bcrypt) {
				<-srv.bcrypt
			}
		}
	}
	defer release()

	type client struct {
		s  *Session
		ft *fakeTransport
	}
	clients := make([]client, sessions)
	opened := time.Now()
	for i := range clients {
		// Distinct addresses: one address has one check in flight at most.
		clients[i].s, clients[i].ft = openFrom(srv, fmt.Sprintf("10.0.1.%d:4000", i+1))
	}
	// Just before the timeout falls.
	time.Sleep(time.Until(opened.Add(authTimeout - 30*time.Millisecond)))
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.s.HandleFrame(loginFrame(t, "admin", "pw"))
		}()
	}
	// The logins wait for bcrypt for three auth timeouts.
	time.Sleep(3 * authTimeout)
	for i, c := range clients {
		if code := c.ft.closeCode(); code != 0 {
			t.Errorf("session %d closed with %d while its login waited for bcrypt", i, code)
		}
	}
	release()
	wg.Wait()
	for i, c := range clients {
		code, ok := c.ft.answerCode()
		if !ok || code != 0 {
			t.Errorf("session %d: answer %d (%v), want success", i, code, ok)
		}
		if c.ft.closeCode() == wire.ClosePolicy {
			t.Errorf("session %d closed with 1008", i)
		}
	}
}

// answerMsg returns the msg of the response to request id "a".
func (f *fakeTransport) answerMsg() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fr := range f.frames {
		for _, line := range bytes.Split(fr, []byte("\n")) {
			var m struct {
				Op        string `json:"op"`
				RequestID string `json:"request_id"`
				Msg       string `json:"msg"`
			}
			if json.Unmarshal(line, &m) == nil && m.Op == "response" && m.RequestID == "a" {
				return m.Msg
			}
		}
	}
	return ""
}
