package node_test

// Bad-input integration tests: every case runs against a real nats-server
// and a real node over real WebSockets, and checks two things: the exact
// answer the contract (PROTOCOL.md sections 1-3 and 5) gives for the bad
// input, and that nothing else is hurt by it. "Nothing else" is checked by
// a witness: a second device connected to the same node before the bad
// input, which must still receive a push a backend publishes on
// hub.all.push afterwards, and (where the contract says the session
// survives) by the offending session itself still answering /ping.
//
// Helpers and types in this file carry the prefix "bi" so that they cannot
// clash with other test files of package node_test.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Response and close codes of the contract, spelled out here rather than
// imported, so that the tests pin the wire values themselves.
const (
	biBadRequest   = 400
	biUnauthorized = 401
	biForbidden    = 403
	biNotFound     = 404
	biTimeout      = 408
	biConflict     = 409
	biUnavailable  = 503

	biClosePolicy   = 1008
	biCloseTooLarge = 1009
	biCloseSlow     = 4008
)

var biSeq atomic.Int64

// biUnique returns prefix-N, unique within the test binary.
func biUnique(prefix string) string {
	return prefix + "-" + strconv.FormatInt(biSeq.Add(1), 10)
}

// biEnv is one nats-server with one node on it and a backend's NATS
// connection.
type biEnv struct {
	ns *server.Server
	n  *hubtest.Node
	nc *nats.Conn
}

func biStart(t *testing.T, opts ...hubtest.Option) *biEnv {
	t.Helper()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", opts...)
	return &biEnv{ns: ns, n: n, nc: natstest.Connect(t, ns)}
}

// witness connects the device that must stay untouched by what a test does
// next. It belongs to t, so its waiting methods may fail t.
func (e *biEnv) witness(t *testing.T) *hubtest.Client {
	t.Helper()
	return biWitnessOn(t, e.n)
}

func biWitnessOn(t *testing.T, n *hubtest.Node) *hubtest.Client {
	t.Helper()
	return hubtest.Device(t, n, biUnique("W"), "witness")
}

// probe proves the node and the witness w are unaffected: a push a backend
// publishes on hub.all.push reaches w, w still answers /ping, and the node
// is healthy. It returns the probe's service, so that the caller can check
// that other sessions got the same push.
func (e *biEnv) probe(t *testing.T, w *hubtest.Client) string {
	t.Helper()
	return biProbe(t, e.n, e.nc, w)
}

func biProbe(t *testing.T, n *hubtest.Node, nc *nats.Conn, w *hubtest.Client) string {
	t.Helper()
	svc := "/push/" + biUnique("probe")
	biPublish(t, nc, "hub.all.push", map[string]any{"service": svc, "values": map[string]any{"probe": true}})
	p := w.Push(svc)
	if p.ID == "" || string(p.Values) != `{"probe":true}` {
		t.Fatalf("witness got a wrong push: %s", p.Raw)
	}
	w.MustOK("/ping", nil)
	if code := biHealth(t, n); code != http.StatusOK {
		t.Fatalf("/healthz answered %d, want 200", code)
	}
	return svc
}

func biPublish(t *testing.T, nc *nats.Conn, subject string, body any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(subject, b); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

func biHealth(t *testing.T, n *hubtest.Node) int {
	t.Helper()
	resp, err := http.Get(n.Server.URL + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// biExpect waits for the response with request_id rid and checks that it is
// a failure with code, a non-empty msg, and (when msgHas is set) a msg
// containing msgHas.
func biExpect(t *testing.T, c *hubtest.Client, rid string, code int, msgHas string) hubtest.Msg {
	t.Helper()
	m := c.Next(func(m hubtest.Msg) bool { return m.Op == "response" && m.RequestID == rid })
	if m.Code != code || m.Result {
		t.Fatalf("response %s: got code %d result %v, want code %d result false", m.Raw, m.Code, m.Result, code)
	}
	if m.Msg == "" {
		t.Fatalf("response %s: a failure must carry a msg", m.Raw)
	}
	if msgHas != "" && !strings.Contains(m.Msg, msgHas) {
		t.Fatalf("response %s: msg %q does not name %q", m.Raw, m.Msg, msgHas)
	}
	return m
}

// biMustFail sends a request and checks its failure like biExpect.
func biMustFail(t *testing.T, c *hubtest.Client, code int, msgHas, service string, args any) hubtest.Msg {
	t.Helper()
	id := c.NextID()
	c.Send(hubtest.RequestFrame(service, id, args))
	return biExpect(t, c, id, code, msgHas)
}

// biProof signs /auth/device args for sn with the test master secret.
func biProof(sn string, ts int64, nonce string) map[string]any {
	return map[string]any{"sn": sn, "ts": ts, "nonce": nonce, "sig": auth.Sign(auth.DeviceKey(hubtest.MasterSecret, sn), sn, ts, nonce)}
}

func biNonce() string {
	return biUnique("nonce") + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// biAuthDevice authenticates c as a new device and checks the session
// works: it is how a test shows that a session survived a bad auth attempt.
func biAuthDevice(t *testing.T, c *hubtest.Client) string {
	t.Helper()
	sn := biUnique("D")
	r := c.MustOK("/auth/device", hubtest.DeviceArgs(sn, "robot"))
	var v struct {
		Role string `json:"role"`
	}
	r.Decode(t, &v)
	if v.Role != "device" {
		t.Fatalf("auth answer %s: role %q, want device", r.Raw, v.Role)
	}
	c.MustOK("/ping", nil)
	return sn
}

// biMetric sums the samples of a metric family (0 when it has none yet).
func biMetric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// biLoginHTTP posts body to /api/login and returns the status and the
// decoded JSON answer.
func biLoginHTTP(t *testing.T, n *hubtest.Node, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(n.Server.URL+"/api/login", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST /api/login: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /api/login answer: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("/api/login answered %d with Content-Type %q (%s), want JSON", resp.StatusCode, ct, raw)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("/api/login answered %d with non-JSON %q: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, v
}

// biAdminToken logs the bootstrap admin in over HTTP and returns the token.
func biAdminToken(t *testing.T, n *hubtest.Node) string {
	t.Helper()
	code, v := biLoginHTTP(t, n, `{"username":"admin","password":"`+hubtest.AdminPassword+`"}`)
	tok, _ := v["token"].(string)
	if code != http.StatusOK || tok == "" {
		t.Fatalf("admin login over HTTP: %d %v", code, v)
	}
	return tok
}

// biRawDial opens a bare gorilla connection, for a test that needs to wait
// longer than hubtest's 5 s or to stop reading.
func biRawDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// biRawRequest sends a request on a bare connection and reads until its
// response, for up to timeout.
func biRawRequest(t *testing.T, conn *websocket.Conn, service, rid string, args any, timeout time.Duration) hubtest.Msg {
	t.Helper()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(hubtest.RequestFrame(service, rid, args))); err != nil {
		t.Fatalf("send %s: %v", service, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the response to %s: %v", service, err)
		}
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			var m hubtest.Msg
			if json.Unmarshal(line, &m) != nil {
				continue
			}
			m.Raw = string(line)
			if m.Op == "response" && m.RequestID == rid {
				return m
			}
		}
	}
}

// biRawDrain reads a bare connection until it ends, for up to timeout,
// and returns the responses it got and the close code (0 without a close
// frame).
func biRawDrain(t *testing.T, conn *websocket.Conn, timeout time.Duration) (map[string]hubtest.Msg, int) {
	t.Helper()
	got := make(map[string]hubtest.Msg)
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return got, ce.Code
			}
			t.Logf("connection ended without a close frame: %v", err)
			return got, 0
		}
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			var m hubtest.Msg
			if json.Unmarshal(line, &m) == nil && m.Op == "response" {
				m.Raw = string(line)
				got[m.RequestID] = m
			}
		}
	}
}

// biKeys lists a response map's request_ids, for failure messages.
func biKeys(m map[string]hubtest.Msg) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// biPadded is a /ping request frame of exactly size bytes.
func biPadded(t *testing.T, rid string, size int) string {
	t.Helper()
	head := `{"op":"request","service":"/ping","request_id":"` + rid + `","args":{"pad":"`
	tail := `"}}`
	if size < len(head)+len(tail) {
		t.Fatalf("size %d too small", size)
	}
	return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
}

// --- 1-7: malformed messages on an authenticated session -----------------

func TestBadInputMessages(t *testing.T) {
	t.Parallel()
	e := biStart(t)

	type tc struct {
		name   string
		frame  string // sent as one text frame
		binary []byte // sent as one binary frame instead, when set
		rid    string // request_id of the expected response
		code   int
		msgHas string
	}
	cases := []tc{
		// 1. Malformed JSON: nothing can be read, so request_id is "".
		{name: "malformed JSON truncated", frame: `{"op":"request","service":"/ping","request_id":"m1"`, rid: "", code: biBadRequest},
		{name: "malformed JSON bare words", frame: `hello there`, rid: "", code: biBadRequest},
		{name: "malformed JSON trailing comma", frame: `{"op":"request","service":"/ping","request_id":"m2",}`, rid: "", code: biBadRequest},
		// 2. Not an object.
		{name: "array", frame: `[{"op":"request","service":"/ping","request_id":"a1"}]`, rid: "", code: biBadRequest},
		{name: "string", frame: `"request"`, rid: "", code: biBadRequest},
		{name: "number", frame: `42`, rid: "", code: biBadRequest},
		{name: "null", frame: `null`, rid: "", code: biBadRequest},
		{name: "boolean", frame: `true`, rid: "", code: biBadRequest},
		// 3. Wrong field types; the msg names the field. A request_id that
		// is itself a string is echoed so the client can match the 400.
		{name: "op number", frame: `{"op":1,"service":"/ping","request_id":"t1"}`, rid: "t1", code: biBadRequest, msgHas: "op"},
		{name: "service number", frame: `{"op":"request","service":7,"request_id":"t2"}`, rid: "t2", code: biBadRequest, msgHas: "service"},
		{name: "request_id number", frame: `{"op":"request","service":"/ping","request_id":17}`, rid: "", code: biBadRequest, msgHas: "request_id"},
		{name: "args array", frame: `{"op":"request","service":"/ping","request_id":"t3","args":[1,2]}`, rid: "t3", code: biBadRequest, msgHas: "args"},
		{name: "args string", frame: `{"op":"request","service":"/ping","request_id":"t4","args":"x"}`, rid: "t4", code: biBadRequest, msgHas: "args"},
		{name: "args number", frame: `{"op":"request","service":"/ping","request_id":"t5","args":3}`, rid: "t5", code: biBadRequest, msgHas: "args"},
		// 4. Unknown or missing op, missing service.
		{name: "op subscribe", frame: `{"op":"subscribe","service":"/ping","request_id":"o1"}`, rid: "o1", code: biBadRequest, msgHas: "op"},
		{name: "op push from client", frame: `{"op":"push","service":"/ping","request_id":"o2"}`, rid: "o2", code: biBadRequest, msgHas: "op"},
		{name: "op missing", frame: `{"service":"/ping","request_id":"o3"}`, rid: "o3", code: biBadRequest, msgHas: "op"},
		{name: "empty object", frame: `{}`, rid: "", code: biBadRequest, msgHas: "op"},
		{name: "service missing", frame: `{"op":"request","request_id":"o4"}`, rid: "o4", code: biBadRequest, msgHas: "service"},
		{name: "service empty", frame: `{"op":"request","service":"","request_id":"o5"}`, rid: "o5", code: biBadRequest, msgHas: "service"},
		// 5. A service nobody serves, after auth.
		{name: "unknown service", frame: `{"op":"request","service":"/nope/x","request_id":"u1"}`, rid: "u1", code: biNotFound},
		{name: "unknown service without request_id", frame: `{"op":"request","service":"/nope/y"}`, rid: "", code: biNotFound},
		// A failure without request_id is still answered, with "".
		{name: "forbidden without request_id", frame: `{"op":"request","service":"/admin/push","args":{"target":{"all":true},"service":"/push/x"}}`, rid: "", code: biForbidden},
		// 6. Binary frames.
		{name: "binary frame", binary: []byte{0x01, 0x02, 0xff}, rid: "", code: biBadRequest},
		{name: "binary JSON", binary: []byte(`{"op":"request","service":"/ping"}`), rid: "", code: biBadRequest},
		// 7. Invalid UTF-8 in a text frame.
		{name: "invalid UTF-8", frame: "{\"op\":\"request\",\"service\":\"/ping\",\"args\":{\"x\":\"\xff\xfe\xc3\"}}", rid: "", code: biBadRequest},
		{name: "invalid UTF-8 alone", frame: "\xc3\x28", rid: "", code: biBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			dev := hubtest.Device(t, e.n, biUnique("B"), "robot")
			if c.binary != nil {
				if err := dev.Conn.WriteMessage(websocket.BinaryMessage, c.binary); err != nil {
					t.Fatalf("send binary: %v", err)
				}
			} else {
				dev.Send(c.frame)
			}
			biExpect(t, dev, c.rid, c.code, c.msgHas)
			// The session survives: it still answers /ping, and a push
			// still reaches it and the witness.
			dev.MustOK("/ping", nil)
			dev.Push(e.probe(t, w))
		})
	}

	t.Run("bad line then good line in one frame", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		dev := hubtest.Device(t, e.n, biUnique("B"), "robot")
		dev.Send("{oops\n" + `{"op":"request","service":"/ping","request_id":"after"}`)
		biExpect(t, dev, "", biBadRequest, "")
		r := dev.Response("after")
		if r.Code != 0 || !r.Result {
			t.Fatalf("the good message after a bad one in the same frame: %s", r.Raw)
		}
		e.probe(t, w)
	})
}

// --- 8: frames over the limit ---------------------------------------------

func TestBadInputFrameTooLarge(t *testing.T) {
	t.Parallel()
	e := biStart(t, func(_ *hub.Config, nc *node.Config) { nc.MaxMessageBytes = 1024 })

	t.Run("authenticated", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		dev := hubtest.Device(t, e.n, biUnique("L"), "robot")
		// Just under the limit is fine.
		dev.Send(biPadded(t, "fits", 1000))
		if r := dev.Response("fits"); r.Code != 0 {
			t.Fatalf("a 1000-byte frame under a 1024-byte limit: %s", r.Raw)
		}
		dev.Send(biPadded(t, "big", 2000))
		if code := dev.Closed(5 * time.Second); code != biCloseTooLarge {
			t.Fatalf("2000-byte frame: close code %d, want %d", code, biCloseTooLarge)
		}
		e.probe(t, w)
	})
	t.Run("before auth", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		c := hubtest.Dial(t, e.n.WSURL(), nil)
		c.Send(biPadded(t, "big", 2000))
		if code := c.Closed(5 * time.Second); code != biCloseTooLarge {
			t.Fatalf("2000-byte first frame: close code %d, want %d", code, biCloseTooLarge)
		}
		e.probe(t, w)
	})
}

// --- 9: requests before auth, auth timeout ----------------------------------

func TestBadInputBeforeAuth(t *testing.T) {
	t.Parallel()
	const authTimeout = 500 * time.Millisecond
	e := biStart(t)
	// A second node on the same NATS with a short auth timeout.
	short := hubtest.StartNode(t, e.ns, "n-short", func(hc *hub.Config, _ *node.Config) { hc.AuthTimeout = authTimeout })

	for _, svc := range []string{"/ping", "/admin/push", "/admin/command", "/nope/x", "/device/status"} {
		t.Run("401 for "+svc, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			c := hubtest.Dial(t, e.n.WSURL(), nil)
			biMustFail(t, c, biUnauthorized, "", svc, map[string]any{})
			// A non-auth first message does not close the session: a
			// second one is answered, and auth then succeeds on it.
			biMustFail(t, c, biUnauthorized, "", "/ping", nil)
			biAuthDevice(t, c)
			e.probe(t, w)
		})
	}

	t.Run("closed with 1008 after the auth timeout", func(t *testing.T) {
		t.Parallel()
		w := biWitnessOn(t, short)
		start := time.Now()
		c := hubtest.Dial(t, short.WSURL(), nil)
		biMustFail(t, c, biUnauthorized, "", "/ping", nil)
		biMustFail(t, c, biUnauthorized, "", "/admin/push", map[string]any{"target": map[string]any{"all": true}, "service": "/push/x"})
		if code := c.Closed(5 * time.Second); code != biClosePolicy {
			t.Fatalf("unauthenticated session: close code %d, want %d", code, biClosePolicy)
		}
		if d := time.Since(start); d < authTimeout {
			t.Fatalf("closed after %v, before the %v auth timeout", d, authTimeout)
		}
		biProbe(t, short, e.nc, w)
	})
	t.Run("silent session closed with 1008", func(t *testing.T) {
		t.Parallel()
		w := biWitnessOn(t, short)
		c := hubtest.Dial(t, short.WSURL(), nil)
		if code := c.Closed(5 * time.Second); code != biClosePolicy {
			t.Fatalf("silent session: close code %d, want %d", code, biClosePolicy)
		}
		biProbe(t, short, e.nc, w)
	})
}

// --- 10: device authentication ---------------------------------------------

func TestBadInputDeviceAuth(t *testing.T) {
	t.Parallel()
	e := biStart(t)
	type tc struct {
		name   string
		args   func() map[string]any
		code   int
		msgHas string
	}
	signed := func(mut func(a map[string]any, sn string, ts int64, nonce string)) func() map[string]any {
		return func() map[string]any {
			sn, ts, nonce := biUnique("A"), time.Now().Unix(), biNonce()
			a := biProof(sn, ts, nonce)
			mut(a, sn, ts, nonce)
			return a
		}
	}
	withSN := func(sn string) func() map[string]any {
		return func() map[string]any { return biProof(sn, time.Now().Unix(), biNonce()) }
	}
	cases := []tc{
		{name: "bad signature", code: biUnauthorized, args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			a["sig"] = strings.Repeat("0", 64)
		})},
		{name: "signature not hex", code: biUnauthorized, args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			a["sig"] = strings.Repeat("zz", 32)
		})},
		{name: "signature truncated", code: biUnauthorized, args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			a["sig"] = a["sig"].(string)[:32]
		})},
		{name: "signature with the wrong key", code: biUnauthorized, args: signed(func(a map[string]any, sn string, ts int64, nonce string) {
			a["sig"] = auth.Sign(auth.DeviceKey([]byte("some-other-master-secret-0000"), sn), sn, ts, nonce)
		})},
		{name: "signature of another serial", code: biUnauthorized, args: signed(func(a map[string]any, _ string, ts int64, nonce string) {
			a["sig"] = auth.Sign(auth.DeviceKey(hubtest.MasterSecret, "R-OTHER"), "R-OTHER", ts, nonce)
		})},
		{name: "stale ts", code: biUnauthorized, args: func() map[string]any {
			return biProof(biUnique("A"), time.Now().Unix()-120, biNonce())
		}},
		{name: "future ts", code: biUnauthorized, args: func() map[string]any {
			return biProof(biUnique("A"), time.Now().Unix()+120, biNonce())
		}},
		{name: "sn with a dot", code: biUnauthorized, args: withSN("R.001")},
		{name: "sn with a space", code: biUnauthorized, args: withSN("R 001")},
		{name: "sn with a star", code: biUnauthorized, args: withSN("R*")},
		{name: "sn of 65 characters", code: biUnauthorized, args: withSN(strings.Repeat("R", 65))},
		{name: "sn empty", code: biUnauthorized, args: withSN("")},
		{name: "nonce empty", code: biUnauthorized, args: func() map[string]any {
			return biProof(biUnique("A"), time.Now().Unix(), "")
		}},
		{name: "sig missing", code: biBadRequest, msgHas: "sig", args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			delete(a, "sig")
		})},
		{name: "sn missing", code: biBadRequest, msgHas: "sn", args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			delete(a, "sn")
		})},
		{name: "ts missing", code: biBadRequest, msgHas: "ts", args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			delete(a, "ts")
		})},
		{name: "nonce missing", code: biBadRequest, msgHas: "nonce", args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			delete(a, "nonce")
		})},
		{name: "args missing", code: biBadRequest, args: func() map[string]any { return nil }},
		{name: "ts as a string", code: biBadRequest, msgHas: "ts", args: signed(func(a map[string]any, _ string, ts int64, _ string) {
			a["ts"] = strconv.FormatInt(ts, 10)
		})},
		{name: "sig as a number", code: biBadRequest, msgHas: "sig", args: signed(func(a map[string]any, _ string, _ int64, _ string) {
			a["sig"] = 12345
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			cl := hubtest.Dial(t, e.n.WSURL(), nil)
			var args any
			if a := c.args(); a != nil {
				args = a
			}
			biMustFail(t, cl, c.code, c.msgHas, "/auth/device", args)
			// The session survives a refused auth: it can still
			// authenticate, and then serves /ping.
			biAuthDevice(t, cl)
			e.probe(t, w)
		})
	}

	t.Run("replay on another connection", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		sn := biUnique("RP")
		args := biProof(sn, time.Now().Unix(), biNonce())
		first := hubtest.Dial(t, e.n.WSURL(), nil)
		first.MustOK("/auth/device", args)
		second := hubtest.Dial(t, e.n.WSURL(), nil)
		biMustFail(t, second, biUnauthorized, "", "/auth/device", args)
		// The replay did not replace the genuine session.
		first.MustOK("/ping", nil)
		biAuthDevice(t, second)
		first.Push(e.probe(t, w))
	})

	t.Run("replay across two nodes", func(t *testing.T) {
		t.Parallel()
		n2 := hubtest.StartNode(t, e.ns, "n2")
		w1 := e.witness(t)
		w2 := biWitnessOn(t, n2)
		sn := biUnique("RP")
		args := biProof(sn, time.Now().Unix(), biNonce())
		first := hubtest.Dial(t, e.n.WSURL(), nil)
		first.MustOK("/auth/device", args)
		second := hubtest.Dial(t, n2.WSURL(), nil)
		biMustFail(t, second, biUnauthorized, "", "/auth/device", args)
		first.MustOK("/ping", nil)
		biAuthDevice(t, second)
		e.probe(t, w1)
		biProbe(t, n2, e.nc, w2)
	})

	t.Run("replayed twice on one connection", func(t *testing.T) {
		t.Parallel()
		// A replay stays refused however often it is tried.
		w := e.witness(t)
		args := biProof(biUnique("RP"), time.Now().Unix(), biNonce())
		a := hubtest.Dial(t, e.n.WSURL(), nil)
		a.MustOK("/auth/device", args)
		b := hubtest.Dial(t, e.n.WSURL(), nil)
		biMustFail(t, b, biUnauthorized, "", "/auth/device", args)
		biMustFail(t, b, biUnauthorized, "", "/auth/device", args)
		biAuthDevice(t, b)
		e.probe(t, w)
	})

	t.Run("repeated failures close with 1008", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		c := hubtest.Dial(t, e.n.WSURL(), nil)
		bad := func() map[string]any {
			a := biProof(biUnique("A"), time.Now().Unix(), biNonce())
			a["sig"] = strings.Repeat("0", 64)
			return a
		}
		// The first failures are answered and the session stays open.
		for i := 0; i < 4; i++ {
			biMustFail(t, c, biUnauthorized, "", "/auth/device", bad())
		}
		// Two more: by the sixth failed attempt at the latest it is closed.
		c.Send(hubtest.RequestFrame("/auth/device", "f5", bad()) + "\n" + hubtest.RequestFrame("/auth/device", "f6", bad()))
		if code := c.Closed(5 * time.Second); code != biClosePolicy {
			t.Fatalf("after 6 failed auth attempts: close code %d, want %d", code, biClosePolicy)
		}
		e.probe(t, w)
	})

	t.Run("pipelined failures are answered before the close", func(t *testing.T) {
		t.Parallel()
		// Six refused attempts sent back to back, each in its own frame.
		// Every request_id gets exactly one response (section 2), so the
		// attempts the hub answered before deciding to close (at least the
		// first four, since five failures are allowed before a close) must
		// arrive, and then the 1008.
		w := e.witness(t)
		conn := biRawDial(t, e.n.WSURL())
		for i := 1; i <= 6; i++ {
			a := biProof(biUnique("A"), time.Now().Unix(), biNonce())
			a["sig"] = strings.Repeat("0", 64)
			if err := conn.WriteMessage(websocket.TextMessage, []byte(hubtest.RequestFrame("/auth/device", "p"+strconv.Itoa(i), a))); err != nil {
				break // the server may already have closed
			}
		}
		got, code := biRawDrain(t, conn, 10*time.Second)
		if code != biClosePolicy {
			t.Errorf("close code %d, want %d", code, biClosePolicy)
		}
		for i := 1; i <= 4; i++ {
			rid := "p" + strconv.Itoa(i)
			if m, ok := got[rid]; !ok || m.Code != biUnauthorized {
				t.Errorf("attempt %s: response %q (present %v), want a 401 before the close; got responses for %v", rid, m.Raw, ok, biKeys(got))
			}
		}
		e.probe(t, w)
	})
}

// --- 11: password login -----------------------------------------------------

func TestBadInputLogin(t *testing.T) {
	t.Parallel()
	// An unknown user costs a bcrypt comparison against a dummy hash of
	// cost 10 (auth/password.go), whatever hub.Config.BcryptCost says:
	// about 3 s under -race, 6 s the first time (the dummy hash is made
	// then). A long auth timeout keeps that from closing the session, and
	// the WebSocket case uses a raw connection to wait longer than
	// hubtest's 5 s.
	e := biStart(t, func(hc *hub.Config, _ *node.Config) { hc.AuthTimeout = time.Minute })

	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		conn := biRawDial(t, e.n.WSURL())
		fail := func(rid string, code int, msgHas string, args any) hubtest.Msg {
			t.Helper()
			m := biRawRequest(t, conn, "/auth/login", rid, args, time.Minute)
			if m.Code != code || m.Result || m.Msg == "" || !strings.Contains(m.Msg, msgHas) {
				t.Fatalf("/auth/login %v: %s, want code %d with a msg naming %q", args, m.Raw, code, msgHas)
			}
			return m
		}
		wrong := fail("w1", biUnauthorized, "", map[string]any{"username": "admin", "password": "not-the-password"})
		unknown := fail("w2", biUnauthorized, "", map[string]any{"username": "nobody", "password": "whatever"})
		if wrong.Msg != unknown.Msg {
			t.Fatalf("unknown user msg %q differs from wrong password msg %q: it tells which users exist", unknown.Msg, wrong.Msg)
		}
		fail("w3", biBadRequest, "password", map[string]any{"username": "admin"})
		fail("w4", biBadRequest, "password", map[string]any{"username": "admin", "password": 12})
		// Still open: the right password works on the same session.
		r := biRawRequest(t, conn, "/auth/login", "ok", map[string]any{"username": "admin", "password": hubtest.AdminPassword}, time.Minute)
		var v struct {
			Role  string `json:"role"`
			Token string `json:"token"`
		}
		if err := json.Unmarshal(r.Values, &v); err != nil || r.Code != 0 || v.Role != "admin" || v.Token == "" {
			t.Fatalf("login answer %s", r.Raw)
		}
		if p := biRawRequest(t, conn, "/ping", "p", nil, 10*time.Second); p.Code != 0 || !p.Result {
			t.Fatalf("/ping after login: %s", p.Raw)
		}
		e.probe(t, w)
	})

	t.Run("http", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		code, v := biLoginHTTP(t, e.n, `{"username":"admin","password":"not-the-password"}`)
		wrongMsg, _ := v["msg"].(string)
		if code != http.StatusUnauthorized || wrongMsg == "" {
			t.Fatalf("wrong password: HTTP %d %v, want 401 with a msg", code, v)
		}
		if _, ok := v["token"]; ok {
			t.Fatalf("wrong password answer carries a token: %v", v)
		}
		code, v = biLoginHTTP(t, e.n, `{"username":"nobody","password":"whatever"}`)
		if msg, _ := v["msg"].(string); code != http.StatusUnauthorized || msg != wrongMsg {
			t.Fatalf("unknown user: HTTP %d %v, want 401 with msg %q", code, v, wrongMsg)
		}
		for _, body := range []string{`{`, `not json`, `[]`, `"admin"`, `{"username":1,"password":"x"}`, `{"username":"admin"}`, ``} {
			code, v := biLoginHTTP(t, e.n, body)
			if msg, _ := v["msg"].(string); code != http.StatusBadRequest || msg == "" {
				t.Fatalf("malformed body %q: HTTP %d %v, want 400 with a msg", body, code, v)
			}
		}
		before := time.Now()
		code, v = biLoginHTTP(t, e.n, `{"username":"admin","password":"`+hubtest.AdminPassword+`"}`)
		if code != http.StatusOK {
			t.Fatalf("right password: HTTP %d %v", code, v)
		}
		var ok struct {
			Token     string   `json:"token"`
			ExpiresAt int64    `json:"expires_at"`
			Role      string   `json:"role"`
			Groups    []string `json:"groups"`
		}
		raw, _ := json.Marshal(v)
		if err := json.Unmarshal(raw, &ok); err != nil {
			t.Fatalf("login answer %s: %v", raw, err)
		}
		if ok.Token == "" || ok.Role != "admin" || len(ok.Groups) != 1 || ok.Groups[0] != "*" {
			t.Fatalf("login answer %s", raw)
		}
		// expires_at is in milliseconds and in the future (a value in
		// seconds would be in 1970 when read as ms).
		if exp := time.UnixMilli(ok.ExpiresAt); !exp.After(before) || exp.After(before.Add(400*24*time.Hour)) {
			t.Fatalf("expires_at %d (%v) is not a future time in ms", ok.ExpiresAt, exp)
		}
		// The token works on the WebSocket.
		c := hubtest.Dial(t, e.n.WSURL(), nil)
		c.MustOK("/auth/token", map[string]any{"token": ok.Token})
		c.MustOK("/ping", nil)
		e.probe(t, w)
	})
}

// --- 12: token resume -------------------------------------------------------

func TestBadInputToken(t *testing.T) {
	t.Parallel()
	e := biStart(t)

	issue := func(t *testing.T, key []byte, now time.Time, user string) string {
		t.Helper()
		toks, err := auth.NewTokens(auth.TokenConfig{Key: key, TTL: time.Hour, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := toks.Issue(user, auth.RoleAdmin, []string{"*"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	realKey := auth.TokenKey(hubtest.MasterSecret)
	otherKey := auth.TokenKey([]byte("another-master-secret-for-forgery"))

	cases := []struct {
		name   string
		token  func(t *testing.T) any
		code   int
		msgHas string
	}{
		{name: "expired", code: biUnauthorized, msgHas: "token expired", token: func(t *testing.T) any {
			return issue(t, realKey, time.Now().Add(-3*time.Hour), "admin")
		}},
		{name: "forged", code: biUnauthorized, token: func(t *testing.T) any {
			return issue(t, otherKey, time.Now(), "admin")
		}},
		{name: "garbage", code: biUnauthorized, token: func(*testing.T) any { return "not-a-token" }},
		{name: "garbage three parts", code: biUnauthorized, token: func(*testing.T) any { return "aaa.bbb.ccc" }},
		{name: "empty", code: biUnauthorized, token: func(*testing.T) any { return "" }},
		{name: "tampered", code: biUnauthorized, token: func(t *testing.T) any {
			tok := biAdminToken(t, e.n)
			// Flip a character of the signature.
			last := tok[len(tok)-2]
			repl := byte('A')
			if last == 'A' {
				repl = 'B'
			}
			return tok[:len(tok)-2] + string(repl) + tok[len(tok)-1:]
		}},
		{name: "unknown user", code: biUnauthorized, token: func(t *testing.T) any {
			return issue(t, realKey, time.Now(), "ghost")
		}},
		{name: "token as a number", code: biBadRequest, msgHas: "token", token: func(*testing.T) any { return 5 }},
		{name: "token missing", code: biBadRequest, msgHas: "token", token: func(*testing.T) any { return nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			cl := hubtest.Dial(t, e.n.WSURL(), nil)
			args := map[string]any{}
			if tok := c.token(t); tok != nil {
				args["token"] = tok
			}
			m := biMustFail(t, cl, c.code, c.msgHas, "/auth/token", args)
			if c.name != "expired" && strings.Contains(m.Msg, "expired") {
				t.Fatalf("%s token refused as %q", c.name, m.Msg)
			}
			// The session survives and can resume with a good token.
			r := cl.MustOK("/auth/token", map[string]any{"token": biAdminToken(t, e.n)})
			var v struct {
				Role string `json:"role"`
			}
			r.Decode(t, &v)
			if v.Role != "admin" {
				t.Fatalf("token resume answer %s: role %q, want admin", r.Raw, v.Role)
			}
			cl.MustOK("/ping", nil)
			e.probe(t, w)
		})
	}
}

// --- 13: roles ----------------------------------------------------------------

func TestBadInputForbidden(t *testing.T) {
	t.Parallel()
	e := biStart(t)

	// Create a viewer the way an operator tool would: straight into the
	// hub_users bucket. The node watches the bucket.
	const viewerPW = "viewer-pw"
	hash, err := auth.HashPassword(viewerPW, 4)
	if err != nil {
		t.Fatal(err)
	}
	u := auth.User{Name: "viewer1", Role: auth.RoleViewer, Groups: []string{"*"}, PasswordHash: hash, UpdatedAt: time.Now().UnixMilli()}
	body, _ := json.Marshal(u)
	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, schema.BucketUsers)
	if err != nil {
		t.Fatalf("bucket %s: %v", schema.BucketUsers, err)
	}
	if _, err := kv.Put(ctx, u.Name, body); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		code, v := biLoginHTTP(t, e.n, `{"username":"viewer1","password":"`+viewerPW+`"}`)
		if code != http.StatusOK {
			return fmt.Errorf("viewer login: HTTP %d %v", code, v)
		}
		return nil
	})

	t.Run("viewer", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		viewer := hubtest.Admin(t, e.n, "viewer1", viewerPW)
		badSvc := "/push/" + biUnique("viewer-push")
		biMustFail(t, viewer, biForbidden, "", "/admin/push", map[string]any{"target": map[string]any{"all": true}, "service": badSvc, "values": map[string]any{}})
		target := biUnique("T")
		tdev := hubtest.Device(t, e.n, target, "robot")
		biMustFail(t, viewer, biForbidden, "", "/admin/command", map[string]any{"sn": target, "service": "/cmd/move", "timeout_ms": 500})
		viewer.MustOK("/ping", nil)
		e.probe(t, w)
		w.NoPush(badSvc, 100*time.Millisecond)
		tdev.MustOK("/ping", nil)
	})

	t.Run("device", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		dev := hubtest.Device(t, e.n, biUnique("F"), "robot")
		badSvc := "/push/" + biUnique("device-push")
		biMustFail(t, dev, biForbidden, "", "/admin/push", map[string]any{"target": map[string]any{"all": true}, "service": badSvc})
		biMustFail(t, dev, biForbidden, "", "/admin/command", map[string]any{"sn": "R-001", "service": "/cmd/x"})
		dev.MustOK("/ping", nil)
		e.probe(t, w)
		w.NoPush(badSvc, 100*time.Millisecond)
	})
}

// --- 14: repeated abuse -------------------------------------------------------

func TestBadInputAbuse(t *testing.T) {
	t.Parallel()
	e := biStart(t, func(hc *hub.Config, _ *node.Config) { hc.AbuseBurst = 5 })

	t.Run("malformed flood closes with 1008", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		dev := hubtest.Device(t, e.n, biUnique("AB"), "robot")
		// A couple of bad messages are answered and the session goes on.
		dev.Send(`{"op":`)
		biExpect(t, dev, "", biBadRequest, "")
		dev.Send(`{"op":"request","service":"/ping","request_id":"x1","args":[]}`)
		biExpect(t, dev, "x1", biBadRequest, "args")
		dev.MustOK("/ping", nil)
		// A flood is not.
		dev.Send(strings.Repeat("garbage\n", 30))
		if code := dev.Closed(5 * time.Second); code != biClosePolicy {
			t.Fatalf("abusive session: close code %d, want %d", code, biClosePolicy)
		}
		if v := biMetric(t, e.n.Registry, "fleethub_abuse_closes_total"); v < 1 {
			t.Fatalf("fleethub_abuse_closes_total = %v, want >= 1", v)
		}
		e.probe(t, w)
	})

	t.Run("bad requests before the threshold are answered", func(t *testing.T) {
		t.Parallel()
		// AbuseBurst 5: the first five failures are within the budget, so
		// each must get its 400 (section 2: a bad message gets a 400 and
		// the session goes on); the close comes after them.
		for _, oneFrame := range []bool{false, true} {
			w := e.witness(t)
			conn := biRawDial(t, e.n.WSURL())
			if r := biRawRequest(t, conn, "/auth/device", "auth", hubtest.DeviceArgs(biUnique("AB"), "robot"), 10*time.Second); r.Code != 0 {
				t.Fatalf("auth: %s", r.Raw)
			}
			var lines []string
			for i := 1; i <= 10; i++ {
				lines = append(lines, `{"op":"request","service":"/ping","request_id":"g`+strconv.Itoa(i)+`","args":[]}`)
			}
			if oneFrame {
				_ = conn.WriteMessage(websocket.TextMessage, []byte(strings.Join(lines, "\n")))
			} else {
				for _, l := range lines {
					if conn.WriteMessage(websocket.TextMessage, []byte(l)) != nil {
						break
					}
				}
			}
			got, code := biRawDrain(t, conn, 10*time.Second)
			if code != biClosePolicy {
				t.Errorf("one frame %v: close code %d, want %d", oneFrame, code, biClosePolicy)
			}
			for i := 1; i <= 5; i++ {
				rid := "g" + strconv.Itoa(i)
				if m, ok := got[rid]; !ok || m.Code != biBadRequest {
					t.Errorf("one frame %v: %s: response %q (present %v), want a 400 before the close; got responses for %v", oneFrame, rid, m.Raw, ok, biKeys(got))
				}
			}
			e.probe(t, w)
		}
	})

	t.Run("flood in separate frames closes with 1008", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		dev := hubtest.Device(t, e.n, biUnique("AB"), "robot")
		for i := 0; i < 30; i++ {
			// Writes may fail once the server has closed; that is the point.
			if err := dev.Conn.WriteMessage(websocket.TextMessage, []byte(`[]`)); err != nil {
				break
			}
		}
		if code := dev.Closed(5 * time.Second); code != biClosePolicy {
			t.Fatalf("abusive session: close code %d, want %d", code, biClosePolicy)
		}
		e.probe(t, w)
	})
}

// --- 15: auth twice -----------------------------------------------------------

func TestBadInputReauth(t *testing.T) {
	t.Parallel()
	e := biStart(t)

	t.Run("device", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		dev := hubtest.Device(t, e.n, biUnique("RA"), "robot")
		biMustFail(t, dev, biConflict, "", "/auth/device", hubtest.DeviceArgs(biUnique("RA"), "robot"))
		biMustFail(t, dev, biConflict, "", "/auth/login", map[string]any{"username": "admin", "password": hubtest.AdminPassword})
		biMustFail(t, dev, biConflict, "", "/auth/token", map[string]any{"token": biAdminToken(t, e.n)})
		// Still the same device: no admin rights were picked up.
		biMustFail(t, dev, biForbidden, "", "/admin/push", map[string]any{"target": map[string]any{"all": true}, "service": "/push/x"})
		dev.MustOK("/ping", nil)
		e.probe(t, w)
	})
	t.Run("admin", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		adm := hubtest.Admin(t, e.n, "admin", hubtest.AdminPassword)
		biMustFail(t, adm, biConflict, "", "/auth/login", map[string]any{"username": "admin", "password": hubtest.AdminPassword})
		biMustFail(t, adm, biConflict, "", "/auth/token", map[string]any{"token": biAdminToken(t, e.n)})
		biMustFail(t, adm, biConflict, "", "/auth/device", hubtest.DeviceArgs(biUnique("RA"), "robot"))
		adm.MustOK("/ping", nil)
		e.probe(t, w)
	})
}

// --- 16: admin service arguments ----------------------------------------------

func TestBadInputAdminArgs(t *testing.T) {
	t.Parallel()
	e := biStart(t)

	pushCases := []struct {
		name   string
		args   func(svc string) any
		msgHas string
	}{
		{name: "no target", msgHas: "target", args: func(svc string) any {
			return map[string]any{"service": svc, "values": map[string]any{}}
		}},
		{name: "two target keys", msgHas: "target", args: func(svc string) any {
			return map[string]any{"target": map[string]any{"all": true, "type": "witness"}, "service": svc}
		}},
		{name: "empty target", msgHas: "target", args: func(svc string) any {
			return map[string]any{"target": map[string]any{}, "service": svc}
		}},
		{name: "all false", msgHas: "all", args: func(svc string) any {
			return map[string]any{"target": map[string]any{"all": false}, "service": svc}
		}},
		{name: "unknown target kind", msgHas: "target", args: func(svc string) any {
			return map[string]any{"target": map[string]any{"planet": "mars"}, "service": svc}
		}},
		{name: "target not an object", msgHas: "target", args: func(svc string) any {
			return map[string]any{"target": "all", "service": svc}
		}},
		{name: "where unknown key", msgHas: "where", args: func(svc string) any {
			return map[string]any{"target": map[string]any{"all": true}, "service": svc, "where": map[string]any{"color": "red"}}
		}},
		{name: "values array", msgHas: "values", args: func(svc string) any {
			return map[string]any{"target": map[string]any{"all": true}, "service": svc, "values": []int{1}}
		}},
		{name: "values string", msgHas: "values", args: func(svc string) any {
			return map[string]any{"target": map[string]any{"all": true}, "service": svc, "values": "x"}
		}},
		{name: "service missing", msgHas: "service", args: func(string) any {
			return map[string]any{"target": map[string]any{"all": true}}
		}},
	}
	for _, c := range pushCases {
		t.Run("push "+c.name, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			adm := hubtest.Admin(t, e.n, "admin", hubtest.AdminPassword)
			svc := "/push/" + biUnique("bad")
			biMustFail(t, adm, biBadRequest, c.msgHas, "/admin/push", c.args(svc))
			adm.MustOK("/ping", nil)
			e.probe(t, w)
			w.NoPush(svc, 100*time.Millisecond)
		})
	}

	cmdCases := []struct {
		name   string
		args   map[string]any
		msgHas string
	}{
		{name: "sn with a dot", msgHas: "sn", args: map[string]any{"sn": "R.001", "service": "/cmd/x"}},
		{name: "sn with a space", msgHas: "sn", args: map[string]any{"sn": "R 001", "service": "/cmd/x"}},
		{name: "sn missing", msgHas: "sn", args: map[string]any{"service": "/cmd/x"}},
		{name: "sn a number", msgHas: "sn", args: map[string]any{"sn": 7, "service": "/cmd/x"}},
		{name: "timeout_ms 0", msgHas: "timeout_ms", args: map[string]any{"sn": "R-001", "service": "/cmd/x", "timeout_ms": 0}},
		{name: "timeout_ms 70000", msgHas: "timeout_ms", args: map[string]any{"sn": "R-001", "service": "/cmd/x", "timeout_ms": 70000}},
		{name: "timeout_ms negative", msgHas: "timeout_ms", args: map[string]any{"sn": "R-001", "service": "/cmd/x", "timeout_ms": -1}},
		{name: "timeout_ms a string", msgHas: "timeout_ms", args: map[string]any{"sn": "R-001", "service": "/cmd/x", "timeout_ms": "300"}},
		{name: "service missing", msgHas: "service", args: map[string]any{"sn": "R-001"}},
		{name: "args not an object", msgHas: "args", args: map[string]any{"sn": "R-001", "service": "/cmd/x", "args": []int{1}}},
	}
	for _, c := range cmdCases {
		t.Run("command "+c.name, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			adm := hubtest.Admin(t, e.n, "admin", hubtest.AdminPassword)
			biMustFail(t, adm, biBadRequest, c.msgHas, "/admin/command", c.args)
			adm.MustOK("/ping", nil)
			e.probe(t, w)
		})
	}

	t.Run("command to a device connected nowhere", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		adm := hubtest.Admin(t, e.n, "admin", hubtest.AdminPassword)
		biMustFail(t, adm, biUnavailable, "", "/admin/command", map[string]any{"sn": biUnique("GHOST"), "service": "/cmd/x", "timeout_ms": 2000})
		adm.MustOK("/ping", nil)
		e.probe(t, w)
	})

	t.Run("command to a device that does not answer", func(t *testing.T) {
		t.Parallel()
		w := e.witness(t)
		adm := hubtest.Admin(t, e.n, "admin", hubtest.AdminPassword)
		sn := biUnique("SILENT")
		silent := hubtest.Device(t, e.n, sn, "robot")
		start := time.Now()
		biMustFail(t, adm, biTimeout, "", "/admin/command", map[string]any{"sn": sn, "service": "/cmd/move", "args": map[string]any{"to": "A"}, "timeout_ms": 300})
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("408 took %v for a 300ms timeout", d)
		}
		// The device did get the command, and a late answer is harmless.
		req := silent.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == "/cmd/move" })
		silent.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{}}`)
		silent.MustOK("/ping", nil)
		adm.MustOK("/ping", nil)
		silent.Push(e.probe(t, w))
	})
}

// --- 17: browser origins --------------------------------------------------------

func TestBadInputOrigin(t *testing.T) {
	t.Parallel()
	e := biStart(t, func(_ *hub.Config, nc *node.Config) {
		nc.AllowedOrigins = []string{"https://dash.example", "http://ops.example:8080"}
	})

	cases := []struct {
		name    string
		origin  func() string
		allowed bool
	}{
		{name: "evil", origin: func() string { return "http://evil.example" }},
		{name: "null", origin: func() string { return "null" }},
		{name: "allowed host as a prefix", origin: func() string { return "https://dash.example.evil.example" }},
		{name: "allowed host other scheme", origin: func() string { return "http://dash.example" }},
		{name: "allowed host other port", origin: func() string { return "https://dash.example:8443" }},
		{name: "allowed host without its port", origin: func() string { return "http://ops.example" }},
		// Same origin is always allowed (PROTOCOL §1); with a list, only
		// under a Host that cannot be rebound (an address, localhost).
		{name: "same origin", allowed: true, origin: func() string { return e.n.Server.URL }},
		{name: "listed origin", allowed: true, origin: func() string { return "https://dash.example" }},
		{name: "listed origin with port", allowed: true, origin: func() string { return "http://ops.example:8080" }},
		{name: "no origin", allowed: true, origin: func() string { return "" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := e.witness(t)
			var h http.Header
			if o := c.origin(); o != "" {
				h = http.Header{"Origin": []string{o}}
			}
			cl, err := hubtest.TryDial(t, e.n.WSURL(), h)
			if !c.allowed {
				if err == nil {
					t.Fatalf("upgrade with Origin %q accepted, want HTTP 403", c.origin())
				}
				if !strings.Contains(err.Error(), "(HTTP 403)") {
					t.Fatalf("upgrade with Origin %q: %v, want HTTP 403", c.origin(), err)
				}
			} else {
				if err != nil {
					t.Fatalf("upgrade with Origin %q refused: %v", c.origin(), err)
				}
				biAuthDevice(t, cl)
			}
			e.probe(t, w)
		})
	}
}

// --- 18: slow consumers -----------------------------------------------------------

func TestBadInputSlowConsumer(t *testing.T) {
	t.Parallel()
	// A small outbound queue: about four of the 16 KiB pushes below.
	e := biStart(t, func(_ *hub.Config, nc *node.Config) { nc.QueueBytes = 64 << 10 })
	w := e.witness(t)

	// The slow device: a raw gorilla connection that reads its auth answer
	// and then stops reading.
	sn := biUnique("SLOW")
	conn := biRawDial(t, e.n.WSURL())
	if r := biRawRequest(t, conn, "/auth/device", "a1", hubtest.DeviceArgs(sn, "robot"), 10*time.Second); r.Code != 0 {
		t.Fatalf("slow device auth: %s", r.Raw)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if n := e.n.Hub.SessionCount(); n != 2 {
			return fmt.Errorf("%d sessions, want 2", n)
		}
		return nil
	})

	// Flood it until the hub gives up on it.
	const metric = "fleethub_slow_consumers_total"
	payload := map[string]any{"service": "/push/flood", "values": map[string]any{"blob": strings.Repeat("z", 16<<10)}}
	body, _ := json.Marshal(payload)
	subj := "hub.dev." + sn + ".push"
	sent := 0
	for ; sent < 4000; sent++ {
		if err := e.nc.Publish(subj, body); err != nil {
			t.Fatalf("publish: %v", err)
		}
		if sent%50 == 49 {
			if err := e.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if biMetric(t, e.n.Registry, metric) >= 1 {
				break
			}
		}
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if v := biMetric(t, e.n.Registry, metric); v < 1 {
			return fmt.Errorf("%s = %v after %d pushes of 16 KiB", metric, v, sent)
		}
		return nil
	})

	// Now read what reached the socket, to find the close frame.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	frames := 0
	var rerr error
	for {
		if _, _, rerr = conn.ReadMessage(); rerr != nil {
			break
		}
		frames++
	}
	// The client starts reading as soon as the hub counts it slow, well
	// within the second the hub gives the close frame, and the socket is
	// not full (a few frames went out), so the close frame is readable.
	var ce *websocket.CloseError
	if !errors.As(rerr, &ce) {
		t.Fatalf("slow consumer: connection ended after %d frames without a close frame: %v, want close %d", frames, rerr, biCloseSlow)
	}
	if ce.Code != biCloseSlow {
		t.Fatalf("slow consumer closed with %d (%q), want %d", ce.Code, ce.Text, biCloseSlow)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := e.n.Hub.SessionCount(); n != 1 {
			return fmt.Errorf("%d sessions, want 1 (the slow one gone)", n)
		}
		return nil
	})
	t.Logf("slow consumer: %d pushes published, %d frames read, %s = %v", sent+1, frames, metric, biMetric(t, e.n.Registry, metric))
	e.probe(t, w)
	// Other sessions keep receiving, new ones too.
	w2 := e.witness(t)
	e.probe(t, w2)
}

// --- 19: NATS going away ------------------------------------------------------------

func TestBadInputNATSLoss(t *testing.T) {
	t.Parallel()
	e := biStart(t, func(hc *hub.Config, _ *node.Config) {
		hc.ServiceTimeout = time.Second
		hc.CommandTimeout = time.Second
	})
	sn := biUnique("N")
	dev := hubtest.Device(t, e.n, sn, "robot")
	adm := hubtest.Admin(t, e.n, "admin", hubtest.AdminPassword)
	e.probe(t, dev)

	e.ns.Shutdown()
	e.ns.WaitForShutdown()

	natstest.Eventually(t, 10*time.Second, func() error {
		if code := biHealth(t, e.n); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/healthz answered %d, want 503", code)
		}
		return nil
	})

	// Without NATS there is no witness check (no push can be published);
	// what is checked is that every request gets an answer, promptly, and
	// that it is the contract's 503 (bus unavailable).
	//
	// What happens (observed): the hub's nats.Conn is reconnecting. At
	// first (before commit f03f2a6) nc.Publish buffered the push and
	// returned nil, so /admin/push answered success {"id":...} for a push
	// that could never be delivered, and nc.Request waited for its context,
	// so backend services and commands answered 408 "did not answer in
	// time" after the full timeout. The hub now checks IsConnected first and
	// answers 503 "message bus unavailable" within milliseconds. /ping, which
	// needs no bus, keeps working, and sessions are not closed. Node shutdown
	// without NATS still closes sessions with 1012 at once but then takes
	// about 5 s: each KV watcher's Stop (hub/stores.go, openCache) waits for
	// a JetStream consumer-delete request to time out.
	answer := func(t *testing.T, c *hubtest.Client, service string, args any) hubtest.Msg {
		t.Helper()
		start := time.Now()
		m := c.Request(service, args) // fails the test if no answer in 5s
		t.Logf("%s without NATS: code %d msg %q after %v", service, m.Code, m.Msg, time.Since(start).Round(time.Millisecond))
		return m
	}
	t.Run("ping is still answered locally", func(t *testing.T) {
		dev.MustOK("/ping", nil)
		adm.MustOK("/ping", nil)
	})
	t.Run("admin push", func(t *testing.T) {
		m := answer(t, adm, "/admin/push", map[string]any{"target": map[string]any{"sn": sn}, "service": "/push/lost", "values": map[string]any{}})
		if m.Code != biUnavailable || m.Result {
			t.Errorf("/admin/push with NATS down: code %d (%q) result %v, want 503: the push cannot be delivered", m.Code, m.Msg, m.Result)
		}
	})
	t.Run("backend service", func(t *testing.T) {
		m := answer(t, dev, "/nope/x", map[string]any{})
		if m.Code != biUnavailable || m.Result {
			t.Errorf("backend-bound /nope/x with NATS down: code %d (%q), want 503 (bus unavailable)", m.Code, m.Msg)
		}
	})
	t.Run("admin command", func(t *testing.T) {
		m := answer(t, adm, "/admin/command", map[string]any{"sn": sn, "service": "/cmd/x", "timeout_ms": 500})
		if m.Code != biUnavailable || m.Result {
			t.Errorf("/admin/command with NATS down: code %d (%q), want 503 (bus unavailable)", m.Code, m.Msg)
		}
	})
	t.Run("sessions stay usable", func(t *testing.T) {
		dev.MustOK("/ping", nil)
		adm.MustOK("/ping", nil)
	})
	t.Run("shutdown without NATS", func(t *testing.T) {
		// Sessions are told to reconnect elsewhere (section 7), NATS or not.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := e.n.Node.Shutdown(ctx)
		t.Logf("node shutdown without NATS: err %v after %v", err, time.Since(start).Round(time.Millisecond))
		for _, c := range []*hubtest.Client{dev, adm} {
			if code := c.Closed(5 * time.Second); code != 1012 {
				t.Errorf("session at shutdown: close code %d, want 1012", code)
			}
		}
	})
}
