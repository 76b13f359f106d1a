package node

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Without a list, a node on a non-loopback address keeps same-origin by
// Host for requests that reached it on a non-loopback address; one that
// reached it over loopback (a wildcard listener) gets the loopback Host
// rule. (Only loopback sockets are opened in tests, so the local address
// is set by hand here.)
func TestEdgeOriginNonLoopbackListen(t *testing.T) {
	t.Parallel()
	c := newOriginChecker(nil, "0.0.0.0:8080")
	for _, tc := range []struct {
		name, local, origin, host string
		ok                        bool
	}{
		{"same origin on a network address", "10.0.0.1:8080", "https://hub.example", "hub.example", true},
		{"other origin on a network address", "10.0.0.1:8080", "https://evil.example", "hub.example", false},
		{"rebound name over loopback", "127.0.0.1:8080", "http://rebind.example:8080", "rebind.example:8080", false},
		{"localhost over loopback", "127.0.0.1:8080", "http://localhost:8080", "localhost:8080", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			local, err := net.ResolveTCPAddr("tcp", tc.local)
			if err != nil {
				t.Fatal(err)
			}
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
			r.Host = tc.host
			r.Header.Set("Origin", tc.origin)
			if got := c.check(r); got != tc.ok {
				t.Fatalf("check = %v, want %v", got, tc.ok)
			}
		})
	}
	if !newOriginChecker(nil, "127.0.0.1:8080").loopbackListen || newOriginChecker(nil, ":8080").loopbackListen {
		t.Fatal("loopback listen address not recognised")
	}
}

// With a list, same-origin by Host holds only for a Host no DNS answer can
// rebind (an IP literal, localhost); a name must be listed.
func TestEdgeOriginListSameOriginByAddress(t *testing.T) {
	t.Parallel()
	c := newOriginChecker([]string{"https://dash.example"}, "0.0.0.0:8443")
	for _, tc := range []struct {
		name, local, origin, host string
		ok                        bool
	}{
		{"listed", "10.0.0.1:8443", "https://dash.example", "hub.example:8443", true},
		{"same origin by name", "10.0.0.1:8443", "https://hub.example:8443", "hub.example:8443", false},
		{"same origin by address", "10.0.0.1:8443", "https://10.0.0.1:8443", "10.0.0.1:8443", true},
		{"same origin by IPv6 address", "[2001:db8::1]:8443", "https://[2001:db8::1]:8443", "[2001:db8::1]:8443", true},
		{"rebound name over loopback", "127.0.0.1:8443", "http://rebind.example:8443", "rebind.example:8443", false},
		{"loopback address over loopback", "127.0.0.1:8443", "http://127.0.0.1:8443", "127.0.0.1:8443", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			local, err := net.ResolveTCPAddr("tcp", tc.local)
			if err != nil {
				t.Fatal(err)
			}
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
			r.Host = tc.host
			r.Header.Set("Origin", tc.origin)
			if got := c.check(r); got != tc.ok {
				t.Fatalf("check = %v, want %v", got, tc.ok)
			}
		})
	}
}
