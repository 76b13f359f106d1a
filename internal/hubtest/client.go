package hubtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/gorilla/websocket"
)

// Msg is any message the server sends, decoded loosely.
type Msg struct {
	Op        string          `json:"op"`
	Service   string          `json:"service"`
	RequestID string          `json:"request_id"`
	Code      int             `json:"code"`
	Msg       string          `json:"msg"`
	Result    bool            `json:"result"`
	Values    json.RawMessage `json:"values"`
	Args      json.RawMessage `json:"args"`
	ID        string          `json:"id"`
	Raw       string          `json:"-"`
}

// Decode unmarshals the message's values into v.
func (m Msg) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(m.Values, v); err != nil {
		t.Fatalf("decode values of %s: %v", m.Raw, err)
	}
}

// Client is a WebSocket client that speaks the hub protocol.
type Client struct {
	t    testing.TB
	Conn *websocket.Conn
	wmu  sync.Mutex // gorilla allows one writer at a time

	mu      sync.Mutex
	cond    *sync.Cond
	inbox   []Msg
	frames  int
	closeCE *websocket.CloseError
	readErr error
	seq     int
}

// Dial connects to a node's /ws. header may be nil.
func Dial(t testing.TB, url string, header http.Header) *Client {
	t.Helper()
	c, err := TryDial(t, url, header)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// TryDial connects, returning the error (and HTTP status) of a refusal.
func TryDial(t testing.TB, url string, header http.Header) (*Client, error) {
	conn, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	c := &Client{t: t, Conn: conn}
	c.cond = sync.NewCond(&c.mu)
	go c.readLoop()
	t.Cleanup(func() { _ = conn.Close() })
	return c, nil
}

func (c *Client) readLoop() {
	for {
		typ, data, err := c.Conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCE = ce
			}
			c.readErr = err
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		c.frames++
		if typ == websocket.TextMessage {
			for _, line := range bytes.Split(data, []byte{'\n'}) {
				if len(bytes.TrimSpace(line)) == 0 {
					continue
				}
				var m Msg
				if err := json.Unmarshal(line, &m); err != nil {
					m = Msg{Op: "invalid", Msg: err.Error()}
				}
				m.Raw = string(line)
				c.inbox = append(c.inbox, m)
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// Frames is the number of frames received so far.
func (c *Client) Frames() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// wait takes the first message matching f, waiting up to timeout.
func (c *Client) wait(timeout time.Duration, f func(Msg) bool) (Msg, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for i, m := range c.inbox {
			if f(m) {
				c.inbox = append(c.inbox[:i], c.inbox[i+1:]...)
				return m, nil
			}
		}
		if c.readErr != nil {
			return Msg{}, fmt.Errorf("connection ended: %w", c.readErr)
		}
		if time.Now().After(deadline) {
			return Msg{}, errors.New("timed out")
		}
		c.cond.Wait()
	}
}

// Send writes one raw text frame.
func (c *Client) Send(frame string) {
	c.t.Helper()
	c.wmu.Lock()
	err := c.Conn.WriteMessage(websocket.TextMessage, []byte(frame))
	c.wmu.Unlock()
	if err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// NextID returns a fresh request_id.
func (c *Client) NextID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return "r" + strconv.Itoa(c.seq)
}

// RequestFrame encodes one request.
func RequestFrame(service, requestID string, args any) string {
	m := map[string]any{"op": "request", "service": service, "request_id": requestID}
	if args != nil {
		m["args"] = args
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// Request sends a request and waits for its response.
func (c *Client) Request(service string, args any) Msg {
	c.t.Helper()
	id := c.NextID()
	c.Send(RequestFrame(service, id, args))
	return c.Response(id)
}

// responseWait bounds the wait for a response: longer than the hub's
// longest answer (a status or event record is retried for up to 9 s while
// JetStream elects a leader before it is answered 503).
const responseWait = 12 * time.Second

// Response waits for the response with request_id id.
func (c *Client) Response(id string) Msg {
	c.t.Helper()
	m, err := c.wait(responseWait, func(m Msg) bool { return m.Op == "response" && m.RequestID == id })
	if err != nil {
		c.t.Fatalf("response %q: %v", id, err)
	}
	return m
}

// MustOK sends a request and fails the test unless it succeeds.
func (c *Client) MustOK(service string, args any) Msg {
	c.t.Helper()
	m := c.Request(service, args)
	if m.Code != 0 || !m.Result {
		c.t.Fatalf("%s: code %d msg %q", service, m.Code, m.Msg)
	}
	return m
}

// MustCode sends a request and fails the test unless it gets code.
func (c *Client) MustCode(code int, service string, args any) Msg {
	c.t.Helper()
	m := c.Request(service, args)
	if m.Code != code || m.Result {
		c.t.Fatalf("%s: got code %d (%q), want %d", service, m.Code, m.Msg, code)
	}
	return m
}

// Push waits for a push with the service.
func (c *Client) Push(service string) Msg {
	c.t.Helper()
	m, err := c.wait(5*time.Second, func(m Msg) bool { return m.Op == "push" && m.Service == service })
	if err != nil {
		c.t.Fatalf("push %s: %v", service, err)
	}
	return m
}

// Next waits for any message matching f.
func (c *Client) Next(f func(Msg) bool) Msg {
	c.t.Helper()
	m, err := c.wait(5*time.Second, f)
	if err != nil {
		c.t.Fatalf("message: %v", err)
	}
	return m
}

// NoPush checks that no push with the service arrives within d.
func (c *Client) NoPush(service string, d time.Duration) {
	c.t.Helper()
	if m, err := c.wait(d, func(m Msg) bool { return m.Op == "push" && m.Service == service }); err == nil {
		c.t.Fatalf("unexpected push: %s", m.Raw)
	}
}

// Closed waits for the server to close the connection and returns the
// close code (0 when the connection ended without a close frame).
func (c *Client) Closed(timeout time.Duration) int {
	c.t.Helper()
	_, _ = c.wait(timeout, func(Msg) bool { return false })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr == nil {
		c.t.Fatalf("connection still open after %v", timeout)
	}
	if c.closeCE != nil {
		return c.closeCE.Code
	}
	return 0
}

// DeviceArgs signs /auth/device args for sn, now, with a fresh nonce.
func DeviceArgs(sn, typ string) map[string]any {
	ts := time.Now().Unix()
	nonce := "n-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(nonceSeq())
	sig := auth.Sign(auth.DeviceKey(MasterSecret, sn), sn, ts, nonce)
	a := map[string]any{"sn": sn, "ts": ts, "nonce": nonce, "sig": sig}
	if typ != "" {
		a["type"] = typ
	}
	return a
}

var (
	nonceMu sync.Mutex
	nonceN  int
)

func nonceSeq() int {
	nonceMu.Lock()
	defer nonceMu.Unlock()
	nonceN++
	return nonceN
}

// Device dials and authenticates a device.
func Device(t testing.TB, n *Node, sn, typ string) *Client {
	t.Helper()
	c := Dial(t, n.WSURL(), nil)
	c.MustOK("/auth/device", DeviceArgs(sn, typ))
	return c
}

// Admin dials and logs in as a user.
func Admin(t testing.TB, n *Node, user, password string) *Client {
	t.Helper()
	c := Dial(t, n.WSURL(), nil)
	c.MustOK("/auth/login", map[string]any{"username": user, "password": password})
	return c
}

// CloseText is the reason of the server's close frame, once Closed has
// returned ("" without one).
func (c *Client) CloseText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeCE != nil {
		return c.closeCE.Text
	}
	return ""
}

// TryPush waits up to d for a push with the service and reports whether
// one came.
func (c *Client) TryPush(service string, d time.Duration) (Msg, bool) {
	m, err := c.wait(d, func(m Msg) bool { return m.Op == "push" && m.Service == service })
	return m, err == nil
}
