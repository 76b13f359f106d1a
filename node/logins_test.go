package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// fromAddr is an HTTP client whose connections come from the loopback
// address ip (Linux routes all of 127.0.0.0/8 to lo).
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 256},
	}
}

// postLogin posts a login and returns the status, the Retry-After header
// and the JSON body.
func postLogin(c *http.Client, url, user, password string) (int, string, map[string]any, error) {
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := c.Post(url+"/api/login", "application/json", strings.NewReader(string(body)))
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", nil, err
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, "", nil, fmt.Errorf("answer %d %q: %w", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), v, nil
}

// throttledCount reads fleethub_auth_failures_total{reason="throttled"};
// ok is false when the series does not exist.
func throttledCount(t *testing.T, reg *prometheus.Registry) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "fleethub_auth_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "throttled" {
					return m.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestLoginFloodFromOneAddress: 200 concurrent clients at 127.0.0.2 post
// wrong passwords for admin to /api/login for three seconds. The guesses
// the node actually checks stay far below 40 a second; the refusals are
// 429 with Retry-After and a JSON msg, and counted; meanwhile the real
// admin, at 127.0.0.1, logs in promptly over HTTP and over the WebSocket,
// and a WebSocket login from 127.0.0.2 is answered 429.
func TestLoginFloodFromOneAddress(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	if v, ok := throttledCount(t, n.Registry); !ok || v != 0 {
		t.Fatalf("throttled series %v (present %v), want created at 0", v, ok)
	}
	const (
		attackers = 200
		flood     = 3 * time.Second
	)
	attacker := fromAddr("127.0.0.2")
	var checked, refused, failed atomic.Int64
	var badRetry atomic.Value
	start := time.Now()
	stop := start.Add(flood)
	var wg sync.WaitGroup
	for range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(stop) {
				code, retry, v, err := postLogin(attacker, n.Server.URL, "admin", "guess")
				switch {
				case err != nil:
					// Refused below HTTP (a connection cap, say): not a
					// guess either.
					failed.Add(1)
				case code == http.StatusUnauthorized:
					checked.Add(1)
				case code == http.StatusTooManyRequests:
					refused.Add(1)
					msg, _ := v["msg"].(string)
					if secs, err := strconv.Atoi(retry); err != nil || secs < 1 || !strings.Contains(msg, "try again in "+retry+" s") {
						badRetry.Store(fmt.Sprintf("Retry-After %q, msg %q", retry, msg))
					}
				case code != http.StatusServiceUnavailable:
					t.Errorf("attacker: HTTP %d %v", code, v)
				}
				<-tick.C
			}
		}()
	}
	// A WebSocket login from the attacking address, once it is refused
	// over HTTP, is refused too.
	natstest.Eventually(t, 5*time.Second, func() error {
		if refused.Load() == 0 {
			return errorf("no 429 yet")
		}
		return nil
	})
	d := websocket.Dialer{NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	conn, _, err := d.Dial(n.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(hubtest.RequestFrame("/auth/login", "w", map[string]any{"username": "admin", "password": hubtest.AdminPassword}))); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m hubtest.Msg
	if err := json.Unmarshal(data, &m); err != nil || m.Code != 429 || !strings.Contains(m.Msg, "try again in") {
		t.Fatalf("WebSocket login from the attacking address: %s, want 429 saying when to try again", data)
	}
	// The real admin logs in while the flood goes on.
	var slowestHTTP, slowestWS time.Duration
	logins := 0
	for time.Now().Add(500 * time.Millisecond).Before(stop) {
		t0 := time.Now()
		code, _, v, err := postLogin(http.DefaultClient, n.Server.URL, "admin", hubtest.AdminPassword)
		if err != nil || code != http.StatusOK {
			t.Fatalf("the real admin's HTTP login during the flood: %d %v %v", code, v, err)
		}
		t1 := time.Now()
		c := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
		_ = c.Conn.Close()
		slowestHTTP, slowestWS = max(slowestHTTP, t1.Sub(t0)), max(slowestWS, time.Since(t1))
		logins++
		time.Sleep(300 * time.Millisecond) // a person, not a loop
	}
	wg.Wait()
	elapsed := time.Since(start)
	rate := float64(checked.Load()) / elapsed.Seconds()
	t.Logf("attacker: %d guesses checked, %d refused (429), %d failed otherwise in %v: %.1f checked/s; admin: %d logins each way, slowest HTTP %v, WebSocket (dial + login) %v",
		checked.Load(), refused.Load(), failed.Load(), elapsed.Round(time.Millisecond), rate, logins, slowestHTTP, slowestWS)
	if rate >= 10 {
		t.Fatalf("attacker's guesses checked: %.1f a second, want far below 40", rate)
	}
	if logins == 0 || slowestHTTP > 2*time.Second || slowestWS > 2*time.Second {
		t.Fatalf("the real admin's logins during the flood: %d, slowest HTTP %v, WebSocket %v", logins, slowestHTTP, slowestWS)
	}
	if s, _ := badRetry.Load().(string); s != "" {
		t.Fatalf("a 429 with %s", s)
	}
	if v, _ := throttledCount(t, n.Registry); v < float64(refused.Load()) || v == 0 {
		t.Fatalf("throttled counted %v, refused %d", v, refused.Load())
	}
}
