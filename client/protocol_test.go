package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// dialFake dials a device on the fake hub, accepting its auth, and returns
// the client and its connection.
func dialFake(t *testing.T, h *fakeHub, cfg client.Config) (*client.Client, *fakeConn) {
	t.Helper()
	type result struct {
		c   *client.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := client.Dial(ctxT(t), cfg)
		done <- result{c, err}
	}()
	fc := h.accept()
	if cfg.Device != nil {
		fc.authDevice(t, "fake-1")
	} else {
		m := fc.next(t)
		fc.reply(t, m, 0, "", adminAnswer("fake-1", "tok-1"))
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("dial: %v", r.err)
	}
	t.Cleanup(func() { _ = r.c.Close() })
	return r.c, fc
}

func TestFrameOfSeveralMessages(t *testing.T) {
	t.Parallel()
	h := newFakeHub(t)
	var rec recorder
	cfg := deviceConfig("R-101", h.url())
	rec.hook(&cfg)
	c, fc := dialFake(t, h, cfg)

	pinged := make(chan error, 1)
	go func() {
		_, err := c.Ping(ctxT(t))
		pinged <- err
	}()
	m := fc.expect(t, "/ping")
	// A push, the answer, a blank line, CRLF and a second push, in one frame.
	fc.send(t, `{"op":"push","service":"/push/a","id":"1","values":{"n":1}}`+"\n"+
		response(m, 0, "", `{"server_time_ms":1}`)+"\r\n\n"+
		`{"op":"push","service":"/push/b","id":"2","values":{"n":2}}`)
	if err := <-pinged; err != nil {
		t.Fatalf("ping: %v", err)
	}
	rec.waitPush(t, "/push/a", `"n":1`)
	rec.waitPush(t, "/push/b", `"n":2`)
}

func TestRequestTimeoutAndContext(t *testing.T) {
	t.Parallel()
	h := newFakeHub(t)
	cfg := deviceConfig("R-102", h.url())
	cfg.RequestTimeout = 50 * time.Millisecond
	c, fc := dialFake(t, h, cfg)

	if _, err := c.Request(ctxT(t), "/slow", nil); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	m := fc.expect(t, "/slow")
	fc.reply(t, m, 0, "", `{}`) // late: dropped

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Request(ctx, "/slow", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if c.Err() != nil {
		t.Fatalf("client stopped: %v", c.Err())
	}
}

// TestReconnection walks an admin through a lost connection: the waiting
// request fails with ErrDisconnected, a request made while disconnected
// waits for the next connection, which resumes with the token and replays
// the subscriptions first; a 4003 then makes it log in with the password.
func TestReconnection(t *testing.T) {
	h := newFakeHub(t)
	var rec recorder
	cfg := adminConfig(h.url())
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	rec.hook(&cfg)
	c, fc := dialFake(t, h, cfg)
	ctx := ctxT(t)

	subscribed := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctx, map[string]any{"devices": []string{"R-1"}, "topics": []string{"status"}})
		subscribed <- err
	}()
	m := fc.expect(t, "/admin/subscribe")
	if string(m.Args) != `{"devices":["R-1"],"topics":["status"]}` {
		t.Fatalf("subscribe args %s", m.Args)
	}
	fc.reply(t, m, 0, "", `{"devices":[{"sn":"R-1"}]}`)
	if err := <-subscribed; err != nil {
		t.Fatal(err)
	}

	// A request left unanswered when the connection ends.
	lost := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, "/x/lost", nil)
		lost <- err
	}()
	fc.expect(t, "/x/lost")
	states := len(rec.stateKinds())
	fc.closeWith(1012, "node restarting")
	if err := <-lost; !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("lost request: %v", err)
	}
	if s := rec.waitState(t, states, client.StateDisconnected); s.CloseCode != 1012 {
		t.Fatalf("state %+v", s)
	}

	// A request made now waits for the next connection.
	pinged := make(chan error, 1)
	go func() {
		_, err := c.Ping(ctx)
		pinged <- err
	}()
	fc2 := h.accept()
	m = fc2.expect(t, "/auth/token")
	if !strings.Contains(string(m.Args), `"tok-1"`) {
		t.Fatalf("resumed with %s", m.Args)
	}
	select {
	case err := <-pinged:
		t.Fatalf("ping done before the connection was up: %v", err)
	default:
	}
	fc2.reply(t, m, 0, "", adminAnswer("fake-2", "tok-1"))
	m = fc2.expect(t, "/admin/subscribe") // the replay comes before the ping
	if string(m.Args) != `{"devices":["R-1"],"topics":["status"]}` {
		t.Fatalf("replayed args %s", m.Args)
	}
	fc2.reply(t, m, 0, "", `{"devices":[{"sn":"R-1","n":2}]}`)
	m = fc2.expect(t, "/ping")
	fc2.reply(t, m, 0, "", `{"server_time_ms":5}`)
	if err := <-pinged; err != nil {
		t.Fatalf("ping: %v", err)
	}
	if c.Session().Node != "fake-2" {
		t.Fatalf("session %+v", c.Session())
	}
	natstest.Eventually(t, waitFor, func() error {
		if n := rec.snapshotCount(); n != 2 {
			return fmt.Errorf("%d snapshots", n)
		}
		return nil
	})

	// Unsubscribing forgets the subscription: nothing is replayed.
	unsubscribed := make(chan error, 1)
	go func() {
		unsubscribed <- c.Unsubscribe(ctx, map[string]any{"topics": []string{"status"}, "devices": []string{"R-1"}})
	}()
	m = fc2.expect(t, "/admin/unsubscribe")
	fc2.reply(t, m, 0, "", `{"subscriptions":0}`)
	if err := <-unsubscribed; err != nil {
		t.Fatal(err)
	}

	// The token expires: the client logs in with its password.
	fc2.closeWith(4003, "token expired")
	fc3 := h.accept()
	m = fc3.expect(t, "/auth/login")
	if !strings.Contains(string(m.Args), hubtest.AdminPassword) {
		t.Fatalf("login args %s", m.Args)
	}
	fc3.reply(t, m, 0, "", adminAnswer("fake-3", "tok-2"))
	go func() {
		_, err := c.Ping(ctx)
		pinged <- err
	}()
	m = fc3.expect(t, "/ping") // not a replayed subscription
	fc3.reply(t, m, 0, "", `{"server_time_ms":6}`)
	if err := <-pinged; err != nil {
		t.Fatal(err)
	}

	// Close fails the waiting requests with ErrClosed and says goodbye
	// with 1000.
	go func() {
		_, err := c.Request(ctx, "/x/pending", nil)
		lost <- err
	}()
	fc3.expect(t, "/x/pending")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-lost; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("pending at Close: %v", err)
	}
	<-fc3.ended
	if fc3.close == nil || fc3.close.Code != 1000 {
		t.Fatalf("closed with %v, want 1000", fc3.close)
	}
	if !errors.Is(c.Err(), client.ErrClosed) {
		t.Fatalf("Err %v", c.Err())
	}
	if !rec.sawInOrder(client.StateConnected, client.StateDisconnected, client.StateConnecting, client.StateConnected, client.StateDisconnected, client.StateConnected, client.StateDisconnected, client.StateClosed) {
		t.Fatalf("states %v", rec.stateKinds())
	}
	noClientGoroutines(t)
}

// TestDeviceSignsEachConnection: each connection carries a fresh nonce
// and a valid signature.
func TestDeviceSignsEachConnection(t *testing.T) {
	t.Parallel()
	h := newFakeHub(t)
	cfg := deviceConfig("R-103", h.url())
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	c, fc := dialFake(t, h, cfg)
	fc.closeWith(4008, "slow consumer")
	fc2 := h.accept()
	args := fc2.authDevice(t, "fake-2")
	natstest.Eventually(t, waitFor, func() error {
		if c.Session().Node != "fake-2" {
			return errors.New("not reconnected")
		}
		return nil
	})
	ts := int64(args["ts"].(float64))
	nonce := args["nonce"].(string)
	key := auth.DeviceKey(hubtest.MasterSecret, "R-103")
	if args["sn"] != "R-103" || args["type"] != "retail" || args["sig"] != auth.Sign(key, "R-103", ts, nonce) || len(nonce) < 16 {
		t.Fatalf("auth args %v", args)
	}
	if d := time.Since(time.Unix(ts, 0)); d < -2*time.Second || d > 2*time.Second {
		t.Fatalf("ts %d is not now", ts)
	}
}

// TestStopCodes: the close codes that mean "do not come back".
func TestStopCodes(t *testing.T) {
	tests := []struct {
		code  int
		token bool // a Token config, with no password to log in again
		want  error
	}{
		{4001, false, client.ErrReplaced},
		{4002, false, client.ErrKicked},
		{1008, false, client.ErrPolicy},
		{4003, true, client.ErrTokenExpired},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			h := newFakeHub(t)
			cfg := deviceConfig("R-104", h.url())
			if tc.token {
				cfg = client.Config{URL: h.url(), Token: "tok-1"}
			}
			cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond
			c, fc := dialFake(t, h, cfg)
			waiting := make(chan error, 1)
			go func() {
				_, err := c.Request(context.Background(), "/x/wait", nil)
				waiting <- err
			}()
			fc.expect(t, "/x/wait")
			fc.closeWith(tc.code, "bye")
			select {
			case <-c.Done():
			case <-time.After(waitFor):
				t.Fatal("client still running")
			}
			if !errors.Is(c.Err(), tc.want) {
				t.Fatalf("Err %v, want %v", c.Err(), tc.want)
			}
			if err := <-waiting; !errors.Is(err, tc.want) {
				t.Fatalf("waiting request: %v", err)
			}
			if n := h.count(); n != 1 {
				t.Fatalf("%d connections: the client came back", n)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			noClientGoroutines(t)
		})
	}
}

// TestCommandConcurrency: at most 16 handlers run at once; the others are
// answered 429 at once, and every answer carries its request_id.
func TestCommandConcurrency(t *testing.T) {
	t.Parallel()
	h := newFakeHub(t)
	release := make(chan struct{})
	var mu sync.Mutex
	running := 0
	cfg := deviceConfig("R-105", h.url())
	cfg.OnCommand = func(ctx context.Context, cmd client.Command) client.Result {
		mu.Lock()
		running++
		mu.Unlock()
		<-release
		if cmd.Service == "/cmd/bad" {
			return client.Result{Values: []int{1}}
		}
		return client.Result{Code: 7, Msg: "done", Values: json.RawMessage(cmd.Args)}
	}
	_, fc := dialFake(t, h, cfg)
	for i := 1; i <= 20; i++ {
		service := "/cmd/go"
		if i == 1 {
			service = "/cmd/bad"
		}
		fc.send(t, fmt.Sprintf(`{"op":"request","service":%q,"request_id":"hub-%d","args":{"i":%d}}`, service, i, i))
	}
	busy := map[string]bool{}
	for range 4 {
		m := fc.next(t)
		if m.Op != "response" || m.Code != 429 {
			t.Fatalf("got %s, want a 429", m.Raw)
		}
		busy[m.RequestID] = true
	}
	natstest.Eventually(t, waitFor, func() error {
		mu.Lock()
		defer mu.Unlock()
		if running != 16 {
			return fmt.Errorf("%d handlers running", running)
		}
		return nil
	})
	close(release)
	for range 16 {
		m := fc.next(t)
		var want string
		if _, err := fmt.Sscanf(m.RequestID, "hub-%s", &want); err != nil || busy[m.RequestID] {
			t.Fatalf("unexpected answer %s", m.Raw)
		}
		if m.RequestID == "hub-1" {
			if m.Code != 500 {
				t.Fatalf("invalid values answered %s", m.Raw)
			}
			continue
		}
		if m.Code != 7 || m.Msg != "done" || !strings.Contains(string(m.Values), `"i":`+want) {
			t.Fatalf("answer %s", m.Raw)
		}
	}
}
