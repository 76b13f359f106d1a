package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/gorilla/websocket"
)

// fakeHub is a WebSocket server whose every connection the test drives by
// hand, for what a real node does not do on demand (close codes, frames of
// several messages, silence).
type fakeHub struct {
	t     *testing.T
	srv   *httptest.Server
	conns chan *fakeConn

	mu  sync.Mutex
	all []*fakeConn
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, conns: make(chan *fakeConn, 16)}
	up := websocket.Upgrader{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		fc := &fakeConn{ws: ws, msgs: make(chan hubtest.Msg, 256), ended: make(chan struct{})}
		go fc.readLoop()
		h.mu.Lock()
		h.all = append(h.all, fc)
		h.mu.Unlock()
		h.conns <- fc
	}))
	t.Cleanup(func() {
		h.srv.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, fc := range h.all {
			_ = fc.ws.Close()
			<-fc.ended
		}
	})
	return h
}

// url is the hub's WebSocket URL.
func (h *fakeHub) url() string { return "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/ws" }

// accept waits for the next connection.
func (h *fakeHub) accept() *fakeConn {
	h.t.Helper()
	select {
	case fc := <-h.conns:
		return fc
	case <-time.After(waitFor):
		h.t.Fatal("no connection to the fake hub")
		return nil
	}
}

// count is how many connections the hub has accepted.
func (h *fakeHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

// fakeConn is one connection to the fake hub.
type fakeConn struct {
	ws    *websocket.Conn
	msgs  chan hubtest.Msg // what the client sent, one per message
	ended chan struct{}    // closed when the reader ends
	wmu   sync.Mutex
	close *websocket.CloseError // the client's close frame. Set before ended is closed.
}

func (fc *fakeConn) readLoop() {
	defer close(fc.ended)
	defer close(fc.msgs)
	for {
		_, frame, err := fc.ws.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				fc.close = ce
			}
			return
		}
		var m hubtest.Msg
		if err := json.Unmarshal(frame, &m); err != nil {
			m.Op = "invalid"
		}
		m.Raw = string(frame)
		fc.msgs <- m
	}
}

// next waits for the client's next message.
func (fc *fakeConn) next(t *testing.T) hubtest.Msg {
	t.Helper()
	select {
	case m, ok := <-fc.msgs:
		if !ok {
			t.Fatal("the client closed the connection")
		}
		return m
	case <-time.After(waitFor):
		t.Fatal("no message from the client")
		return hubtest.Msg{}
	}
}

// send writes one raw frame.
func (fc *fakeConn) send(t *testing.T, frame string) {
	t.Helper()
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if err := fc.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatalf("fake hub send: %v", err)
	}
}

// response encodes the answer to m.
func response(m hubtest.Msg, code int, msg, values string) string {
	b, _ := json.Marshal(map[string]any{
		"op": "response", "service": m.Service, "request_id": m.RequestID,
		"code": code, "msg": msg, "result": code == 0, "values": json.RawMessage(values),
	})
	return string(b)
}

// reply answers m.
func (fc *fakeConn) reply(t *testing.T, m hubtest.Msg, code int, msg, values string) {
	t.Helper()
	fc.send(t, response(m, code, msg, values))
}

// expect waits for a request to service and returns it.
func (fc *fakeConn) expect(t *testing.T, service string) hubtest.Msg {
	t.Helper()
	m := fc.next(t)
	if m.Op != "request" || m.Service != service || m.RequestID == "" {
		t.Fatalf("got %s, want a request to %s", m.Raw, service)
	}
	return m
}

// authDevice accepts a device's auth request and returns its args.
func (fc *fakeConn) authDevice(t *testing.T, node string) map[string]any {
	t.Helper()
	m := fc.expect(t, "/auth/device")
	var args map[string]any
	if err := json.Unmarshal(m.Args, &args); err != nil {
		t.Fatal(err)
	}
	fc.reply(t, m, 0, "", fmt.Sprintf(`{"session":"s1","role":"device","node":%q,"ping_interval_ms":10000,"sn":%q,"type":"retail","group":"default"}`, node, args["sn"]))
	return args
}

// adminAnswer is the values of an admin's successful auth.
func adminAnswer(node, token string) string {
	return fmt.Sprintf(`{"session":"s1","role":"admin","node":%q,"ping_interval_ms":10000,"token":%q,"expires_at":%d,"user":"admin","groups":["*"]}`,
		node, token, time.Now().Add(time.Hour).UnixMilli())
}

// closeWith sends a close frame with code and closes the connection.
func (fc *fakeConn) closeWith(code int, reason string) {
	fc.wmu.Lock()
	_ = fc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	fc.wmu.Unlock()
	_ = fc.ws.Close()
}
