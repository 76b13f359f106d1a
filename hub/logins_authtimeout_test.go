package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
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
// The logins wait for a slot far longer than the auth timeout, and longer
// than an auth request's own bound (authRequestTimeout, which used to
// bound this wait too, ending it with a 503 and then a 1008): none of the
// sessions is closed while its request waits, and each gets its answer
// (a success) once bcrypt is free again.
func TestAuthTimeoutHeldForQueuedLogins(t *testing.T) {
	t.Parallel()
	const (
		authTimeout = time.Second
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
	// Shortly before the timeout falls (not too shortly: on a loaded
	// machine, starting the goroutines that hand the frames in takes a
	// while, and a frame handed in after the timeout is late).
	time.Sleep(time.Until(opened.Add(authTimeout - 300*time.Millisecond)))
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.s.HandleFrame(loginFrame(t, "admin", "pw"))
		}()
	}
	// The logins wait for bcrypt.
	time.Sleep(authRequestTimeout + time.Second)
	for i, c := range clients {
		if code := c.ft.closeCode(); code != 0 {
			t.Errorf("session %d closed with %d: its login waited for bcrypt", i, code)
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

// TestAuthTimeoutRestartsAfterTryAgain: a login sent just before the auth
// timeout and answered 429 (throttled) leaves the session the full auth
// timeout to try again, not the few milliseconds that were left; then the
// timeout falls as usual.
func TestAuthTimeoutRestartsAfterTryAgain(t *testing.T) {
	t.Parallel()
	const authTimeout = time.Second
	srv := newTestServer(t)
	srv.cfg.AuthTimeout = authTimeout
	const addr = "192.0.2.50:7000"
	for i := range loginIPFree + 1 {
		_, _, _ = srv.Login(context.Background(), addr, fmt.Sprintf("nobody%d", i), "x")
	}
	s, ft := openFrom(srv, addr)
	opened := time.Now()
	time.Sleep(time.Until(opened.Add(authTimeout - 200*time.Millisecond)))
	s.HandleFrame(loginFrame(t, "admin", "pw"))
	answered := time.Now()
	if code, _ := ft.answerCode(); code != wire.CodeRateLimited {
		t.Fatalf("answer %d, want 429", code)
	}
	time.Sleep(time.Until(answered.Add(authTimeout / 2)))
	if code := ft.closeCode(); code != 0 {
		t.Fatalf("closed with %d %v after a 429, want the full auth timeout to try again", code, time.Since(answered))
	}
	natstest.Eventually(t, 5*authTimeout, func() error {
		if code := ft.closeCode(); code != wire.ClosePolicy {
			return fmt.Errorf("close code %d, want %d", code, wire.ClosePolicy)
		}
		return nil
	})
}
