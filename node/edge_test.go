package node_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// Tests of the limits on the HTTP edge: timeouts, the login body, the caps
// on unauthenticated connections and the origin check.

// edgeMetrics has the node register its metrics on the test registry.
func edgeMetrics(hc *hub.Config, nc *node.Config) { nc.Registerer = hc.Registerer }

// edgeServe serves n on a loopback listener of its own through Node.Serve
// (the node's own http.Server, with its timeouts, which httptest's does
// not have) and returns the address.
func edgeServe(t *testing.T, n *hubtest.Node) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Node.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return ln.Addr().String()
}

// edgeDial dials the node's /ws from the local address ip (any of
// 127.0.0.0/8), without reading: the connection stays unauthenticated.
func edgeDial(ctx context.Context, wsURL, ip string, header http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDialContext:   (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
	}
	return d.DialContext(ctx, wsURL, header)
}

// metricValue reads a counter or gauge from the node's registry; label
// may be empty for a metric without labels.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}

// A WebSocket session outlives ReadTimeout and IdleTimeout many times
// over: once the upgrade has hijacked the connection, its deadlines are
// the WebSocket's own (the pong wait), not the HTTP server's.
func TestEdgeSessionOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-rt", func(_ *hub.Config, nc *node.Config) {
		nc.ReadTimeout, nc.IdleTimeout = timeout, timeout
	})
	addr := edgeServe(t, n)
	c := hubtest.Dial(t, "ws://"+addr+"/ws", nil)
	c.MustOK("/auth/device", hubtest.DeviceArgs("EDGE-RT-1", "dog"))
	start := time.Now()
	for time.Since(start) < 10*timeout {
		c.MustOK("/ping", nil)
		<-time.After(timeout / 4) // paces the pings: the span is what is tested
	}
}

// A request body sent a byte at a time is cut at ReadTimeout (408), and
// the connection closed, instead of holding the connection for as long as
// the client likes.
func TestEdgeSlowBodyCut(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-slow", func(_ *hub.Config, nc *node.Config) { nc.ReadTimeout = timeout })
	addr := edgeServe(t, n)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const bodyLen = 4000
	if _, err := fmt.Fprintf(conn, "POST /api/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", addr, bodyLen); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the slow body: one byte every 20 ms, at most bodyLen
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range bodyLen - 2 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer close(stop)
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the slow body after %v: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body answered %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("slow body cut after %v, want about %v", d, timeout)
	}
}

// A handler may run past ReadTimeout: a CPU profile (--pprof) runs for
// the seconds asked. (net/http lifts the read deadline once the request
// has been read; this keeps it so.)
func TestEdgeProfileOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-pprof", func(_ *hub.Config, nc *node.Config) {
		nc.ReadTimeout, nc.Debug = timeout, true
	})
	addr := edgeServe(t, n)
	start := time.Now()
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("profile: HTTP %d", resp.StatusCode)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("a 1 s profile ended after %v: cut at the read deadline", d)
	}
}

// A keep-alive connection left idle is closed after IdleTimeout.
func TestEdgeIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-idle", func(_ *hub.Config, nc *node.Config) { nc.IdleTimeout = timeout })
	addr := edgeServe(t, n)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /livez HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %v after %v, want EOF (closed by the node)", err, time.Since(start))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle connection closed after %v, want about %v", d, timeout)
	}
}

// POST /api/login takes exactly one JSON object of at most 4 KiB, sent as
// application/json; anything else gets a clear status and msg.
func TestEdgeLoginBody(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-login")
	good := `{"username":"admin","password":"` + hubtest.AdminPassword + `"}`
	cases := []struct {
		name, contentType, body string
		code                    int
		msg                     string // a part of the msg
	}{
		{"json", "application/json", good, http.StatusOK, ""},
		{"json with charset", "application/json; charset=utf-8", good, http.StatusOK, ""},
		{"json capitalised", "Application/JSON", good, http.StatusOK, ""},
		{"trailing white space", "application/json", good + "\r\n ", http.StatusOK, ""},
		{"no content type", "", good, http.StatusUnsupportedMediaType, "application/json"},
		{"text/plain", "text/plain", good, http.StatusUnsupportedMediaType, "application/json"},
		{"form", "application/x-www-form-urlencoded", "username=admin&password=x", http.StatusUnsupportedMediaType, "application/json"},
		{"json suffix type", "application/json-patch+json", good, http.StatusUnsupportedMediaType, "application/json"},
		{"bad content type", "application/json; =", good, http.StatusUnsupportedMediaType, "application/json"},
		{"second object", "application/json", good + `{"username":"x"}`, http.StatusBadRequest, "nothing after it"},
		{"trailing garbage", "application/json", good + " x", http.StatusBadRequest, "nothing after it"},
		{"over 4 KiB", "application/json", `{"username":"admin","password":"` + strings.Repeat("p", 5000) + `"}`, http.StatusRequestEntityTooLarge, "4096 bytes"},
		{"padding over 4 KiB", "application/json", good + strings.Repeat(" ", 5000), http.StatusRequestEntityTooLarge, "4096 bytes"},
		{"not JSON", "application/json", "not json", http.StatusBadRequest, "JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, n.Server.URL+"/api/login", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.code {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, raw, c.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json", ct)
			}
			if c.msg != "" && !strings.Contains(string(raw), c.msg) {
				t.Fatalf("answer %s does not name %q", raw, c.msg)
			}
		})
	}
}

// The caps on unauthenticated connections, global and per IP: a refused
// upgrade gets 503 with Retry-After and is counted by reason; a slot comes
// back when its session authenticates, closes, or times out.
func TestEdgeUnauthenticatedCaps(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-caps", edgeMetrics, func(hc *hub.Config, nc *node.Config) {
		hc.AuthTimeout = 2 * time.Minute
		nc.MaxUnauthenticated, nc.MaxUnauthenticatedPerIP = 3, 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(ip string) *websocket.Conn {
		t.Helper()
		c, _, err := edgeDial(ctx, n.WSURL(), ip, nil)
		if err != nil {
			t.Fatalf("upgrade from %s refused: %v", ip, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	refused := func(ip string) {
		t.Helper()
		c, resp, err := edgeDial(ctx, n.WSURL(), ip, nil)
		if err == nil {
			c.Close()
			t.Fatalf("upgrade from %s over the cap accepted", ip)
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("upgrade from %s over the cap: %v %v, want 503 with Retry-After", ip, err, resp)
		}
	}
	count := func(reason string) float64 {
		return metricValue(t, n.Registry, "fleethub_connections_refused_total", reason)
	}
	if count("unauthenticated") != 0 || count("unauthenticated_per_ip") != 0 {
		t.Fatal("refusal counters do not start at 0")
	}

	a1 := open("127.0.0.2")
	open("127.0.0.2")
	refused("127.0.0.2") // per IP
	b1 := open("127.0.0.3")
	refused("127.0.0.3") // global
	refused("127.0.0.4") // global
	if u, p := count("unauthenticated"), count("unauthenticated_per_ip"); u != 2 || p != 1 {
		t.Fatalf("refused: %v global and %v per IP, want 2 and 1", u, p)
	}
	if g := metricValue(t, n.Registry, "fleethub_connections_unauthenticated", ""); g != 3 {
		t.Fatalf("unauthenticated gauge %v, want 3", g)
	}

	// b1 authenticates: it stops counting, the next one gets in.
	if err := b1.WriteMessage(websocket.TextMessage, []byte(hubtest.RequestFrame("/auth/device", "a", hubtest.DeviceArgs("EDGE-CAP-1", "dog")))); err != nil {
		t.Fatal(err)
	}
	_ = b1.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := b1.ReadMessage(); err != nil || !strings.Contains(string(msg), `"result":true`) {
		t.Fatalf("auth: %s %v", msg, err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if g := metricValue(t, n.Registry, "fleethub_connections_unauthenticated", ""); g != 2 {
			return fmt.Errorf("unauthenticated gauge %v, want 2", g)
		}
		return nil
	})
	open("127.0.0.4")
	refused("127.0.0.5")

	// a1 closes: its slot comes back once the node sees the end.
	a1.Close()
	natstest.Eventually(t, 5*time.Second, func() error {
		c, _, err := edgeDial(ctx, n.WSURL(), "127.0.0.2", nil)
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		return nil
	})
	refused("127.0.0.2")
}

// A session closed by the auth timeout gives its slot back.
func TestEdgeUnauthenticatedTimeoutFreesSlot(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-caps-to", edgeMetrics, func(hc *hub.Config, nc *node.Config) {
		hc.AuthTimeout = 500 * time.Millisecond
		nc.MaxUnauthenticated = 1
	})
	c := hubtest.Dial(t, n.WSURL(), nil)
	if _, err := hubtest.TryDial(t, n.WSURL(), nil); err == nil || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("second unauthenticated connection: %v, want HTTP 503", err)
	}
	if code := c.Closed(10 * time.Second); code != wire.ClosePolicy {
		t.Fatalf("closed with %d, want %d (auth timeout)", code, wire.ClosePolicy)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		c, err := hubtest.TryDial(t, n.WSURL(), nil)
		if err != nil {
			return err
		}
		c.MustOK("/auth/device", hubtest.DeviceArgs("EDGE-TO-1", "dog"))
		return nil
	})
}

// A client holding 3,000 unauthenticated sockets from one address (the
// node's default caps) does not lock devices out: its sockets past the
// per-IP cap get 503, devices from another address still connect and
// authenticate, and the counters say so.
func TestEdgeUnauthenticatedFlood(t *testing.T) {
	t.Parallel()
	const (
		attackerIP = "127.0.0.2"
		sockets    = 3000
		perIPCap   = 1000 // node.Config's default
		workers    = 32
		devices    = 20
	)
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-flood", edgeMetrics, func(hc *hub.Config, nc *node.Config) {
		// The attacker's sockets stay for the whole test: no auth timeout
		// or missed pong closes them meanwhile.
		hc.AuthTimeout = 5 * time.Minute
		nc.PingInterval, nc.PongWait = time.Minute, 5*time.Minute
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		mu       sync.Mutex
		held     []*websocket.Conn
		got503   atomic.Int64
		noRetry  atomic.Int64
		failures []error
	)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, resp, err := edgeDial(ctx, n.WSURL(), attackerIP, nil)
				switch {
				case err == nil:
					mu.Lock()
					held = append(held, c)
					mu.Unlock()
				case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
					got503.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						noRetry.Add(1)
					}
				default:
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		}()
	}
	for range sockets {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d dials failed otherwise than with 503, first: %v", len(failures), failures[0])
	}
	if len(held) != perIPCap || got503.Load() != sockets-perIPCap || noRetry.Load() != 0 {
		t.Fatalf("attacker holds %d sockets, %d refused with 503 (%d without Retry-After); want %d, %d, 0",
			len(held), got503.Load(), noRetry.Load(), perIPCap, sockets-perIPCap)
	}

	for i := range devices {
		d := hubtest.Device(t, n, fmt.Sprintf("EDGE-FLOOD-%d", i), "dog")
		d.MustOK("/ping", nil)
	}
	if v := metricValue(t, n.Registry, "fleethub_connections_refused_total", "unauthenticated_per_ip"); v != sockets-perIPCap {
		t.Fatalf("refused per IP counted %v, want %d", v, sockets-perIPCap)
	}
	if v := metricValue(t, n.Registry, "fleethub_connections_refused_total", "unauthenticated"); v != 0 {
		t.Fatalf("refused globally counted %v, want 0", v)
	}
	if v := metricValue(t, n.Registry, "fleethub_connections_unauthenticated", ""); v != perIPCap {
		t.Fatalf("unauthenticated gauge %v, want %d (the attacker's; the devices authenticated)", v, perIPCap)
	}

	// The attacker lets go: every slot comes back.
	for _, c := range held {
		c.Close()
	}
	held = nil
	natstest.Eventually(t, 30*time.Second, func() error {
		if v := metricValue(t, n.Registry, "fleethub_connections_unauthenticated", ""); v != 0 {
			return fmt.Errorf("unauthenticated gauge %v, want 0", v)
		}
		return nil
	})
}

// With --allowed-origins, the listed origins, requests without Origin and
// same-origin requests under a Host no DNS answer can rebind pass: a name
// in Host, which a rebinding page controls, does not.
func TestEdgeOriginListHasNoHostFallback(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-origin-list", func(_ *hub.Config, nc *node.Config) {
		nc.AllowedOrigins = []string{"https://dash.example"}
	})
	port := n.Server.Listener.Addr().(*net.TCPAddr).Port
	cases := []struct {
		name, origin, host string
		ok                 bool
	}{
		{"rebinding name", fmt.Sprintf("http://rebind.example:%d", port), fmt.Sprintf("rebind.example:%d", port), false},
		{"node's own address", n.Server.URL, "", true},
		{"localhost", fmt.Sprintf("http://localhost:%d", port), fmt.Sprintf("localhost:%d", port), true},
		{"other origin", "http://evil.example", "", false},
		{"listed", "https://dash.example", "", true},
		{"no origin", "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { edgeOriginCase(t, n, c.origin, c.host, c.ok) })
	}
}

// Without a list, a node on a loopback address takes same-origin requests
// only under a loopback Host: a rebound name (Origin and Host both
// evil.example) is refused.
func TestEdgeOriginLoopbackHost(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "edge-origin-lo")
	port := n.Server.Listener.Addr().(*net.TCPAddr).Port
	cases := []struct {
		name, origin, host string
		ok                 bool
	}{
		{"rebinding name", fmt.Sprintf("http://rebind.example:%d", port), fmt.Sprintf("rebind.example:%d", port), false},
		{"rebinding name, https", fmt.Sprintf("https://rebind.example:%d", port), fmt.Sprintf("rebind.example:%d", port), false},
		{"other origin", "http://evil.example", "", false},
		{"127.0.0.1", n.Server.URL, "", true},
		{"127.9.9.9", fmt.Sprintf("http://127.9.9.9:%d", port), fmt.Sprintf("127.9.9.9:%d", port), true},
		{"localhost", fmt.Sprintf("http://localhost:%d", port), fmt.Sprintf("localhost:%d", port), true},
		{"LOCALHOST", fmt.Sprintf("http://LOCALHOST:%d", port), fmt.Sprintf("localhost:%d", port), true},
		{"::1", fmt.Sprintf("http://[::1]:%d", port), fmt.Sprintf("[::1]:%d", port), true},
		{"no origin", "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { edgeOriginCase(t, n, c.origin, c.host, c.ok) })
	}
}

// edgeOriginCase upgrades with the Origin and Host given (empty: none, and
// the URL's) and checks the answer: a session, or 403.
func edgeOriginCase(t *testing.T, n *hubtest.Node, origin, host string, ok bool) {
	t.Helper()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	if host != "" {
		h.Set("Host", host) // gorilla sends it as the request's Host
	}
	cl, err := hubtest.TryDial(t, n.WSURL(), h)
	if !ok {
		if err == nil || !strings.Contains(err.Error(), "(HTTP 403)") {
			t.Fatalf("Origin %q Host %q: %v, want HTTP 403", origin, host, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Origin %q Host %q refused: %v", origin, host, err)
	}
	cl.MustOK("/auth/device", hubtest.DeviceArgs(fmt.Sprintf("EDGE-ORIGIN-%d", edgeSN.Add(1)), "dog"))
}

var edgeSN atomic.Int64

func TestEdgeIsLoopbackHost(t *testing.T) {
	t.Parallel()
	for hostport, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.1.2.3:80": true, "127.0.0.1": true, "localhost:8080": true,
		"LocalHost": true, "[::1]:8080": true, "::1": true, "[::ffff:127.0.0.1]:80": true,
		"0.0.0.0:8080": false, "[::]:8080": false, ":8080": false, "": false, "10.1.2.3:8080": false,
		"example.com:8080": false, "localhost.example.com:80": false, "127.0.0.1.nip.io:80": false,
		"[fe80::1%lo]:80": false,
	} {
		if got := node.IsLoopbackHost(hostport); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", hostport, got, want)
		}
	}
}
