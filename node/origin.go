package node

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// normalizeOrigin lower-cases an origin and checks it is scheme://host[:port]
// with nothing else.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("node: allowed origin %q is not scheme://host[:port]", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// originChecker decides which browser origins may open a WebSocket.
// melody's default upgrader accepts every origin, which would let any web
// page a logged-in admin visits talk to the hub as that admin; this one
// allows requests without Origin (devices, scripts), and then:
//
//   - with a configured list, the listed origins and nothing else. Same
//     origin is not inferred from the Host header then: under DNS
//     rebinding a hostile page's own name resolves to the node, so its
//     Origin and Host agree. An operator who serves the dashboard from the
//     node lists the node's own origin.
//   - without a list, same-origin requests (Origin host equal to Host), as
//     gorilla's own check does. On a connection that reached the node on a
//     loopback address (always, for a loopback listen address), Host must
//     then also be a loopback name or address (localhost, 127.0.0.0/8,
//     ::1): only a rebound name would reach a loopback socket under
//     another one.
type originChecker struct {
	allowed map[string]bool
	// loopbackListen: the node listens on a loopback address, so every
	// request arrived on one (also checked per connection).
	loopbackListen bool
}

func newOriginChecker(list []string, listen string) *originChecker {
	c := &originChecker{allowed: make(map[string]bool, len(list)), loopbackListen: IsLoopbackHost(listen)}
	for _, o := range list {
		if n, err := normalizeOrigin(o); err == nil {
			c.allowed[n] = true
		}
	}
	return c
}

func (c *originChecker) check(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if c.allowed[strings.ToLower(u.Scheme+"://"+u.Host)] {
		return true
	}
	// Same origin: the page was served by this host. Like gorilla's own
	// check, the host decides; the scheme may differ behind a TLS proxy.
	if !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	// Under DNS rebinding a hostile page's own name resolves to the node,
	// and its Origin and Host agree: a Host that is a name is trusted only
	// where no list names the node's origins and the node is not reached
	// on loopback. An IP literal or localhost cannot be rebound: a page
	// with that origin was served from that address.
	if c.loopbackListen || arrivedOnLoopback(r) {
		return IsLoopbackHost(r.Host)
	}
	if len(c.allowed) > 0 {
		return isAddressHost(r.Host)
	}
	return true
}

// isAddressHost reports whether hostport (a Host header) is an IP literal
// or localhost: a host no DNS answer can point elsewhere.
func isAddressHost(hostport string) bool {
	if IsLoopbackHost(hostport) {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	_, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil
}

// arrivedOnLoopback reports whether the request's connection was accepted
// on a loopback address.
func arrivedOnLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// isLoopbackHost reports whether hostport (a Host header or a listen
// address, with or without a port) names a loopback host: "localhost" or a
// loopback IP. Other names are not looked up: what they resolve to is what
// DNS rebinding controls.
func IsLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
