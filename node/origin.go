package node

import (
	"fmt"
	"net/http"
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
// allows requests without Origin (devices, scripts), same-origin requests
// and the configured list, and nothing else.
type originChecker struct {
	allowed map[string]bool
}

func newOriginChecker(list []string) *originChecker {
	c := &originChecker{allowed: make(map[string]bool, len(list))}
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
	// Same origin: the page was served by this host. Like gorilla's own
	// check, the host decides; the scheme may differ behind a TLS proxy.
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return c.allowed[strings.ToLower(u.Scheme+"://"+u.Host)]
}
