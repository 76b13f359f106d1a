package node

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/prometheus/client_golang/prometheus"
)

// Limits on the HTTP edge: request timeouts, and caps on WebSocket
// connections that have not authenticated yet.
//
// A connection counts as unauthenticated from the moment its upgrade is
// let through (before the hijack) until its session authenticates or ends,
// whichever comes first (auth timeout, close, refused upgrade). Holding
// thousands of sockets open without authenticating thus costs an attacker
// one slot each, and once a cap is reached further upgrades are refused
// with 503 before any WebSocket state is built, while sessions that
// authenticate (devices, admins) never count against it. The per-IP cap
// keys on the TCP peer's address: X-Forwarded-For and the like are not
// trusted, as any client could set them.

// Refusal reasons, the label values of connections_refused_total.
const (
	refusedUnauthenticated      = "unauthenticated"
	refusedUnauthenticatedPerIP = "unauthenticated_per_ip"
)

// retryAfter is what a refused upgrade is told to wait, in seconds: by
// then the slots held by clients that never authenticate are being freed
// by the auth timeout (5 s by default).
const retryAfter = 5

// metrics are the node's Prometheus metrics.
type metrics struct {
	refused         *prometheus.CounterVec
	unauthenticated prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "fleethub"
	m := &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "connections_refused_total",
			Help: "WebSocket upgrades refused with 503 before the upgrade, by reason (a cap on unauthenticated connections, global or per IP).",
		}, []string{"reason"}),
		unauthenticated: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections_unauthenticated",
			Help: "WebSocket connections let through and not yet authenticated.",
		}),
	}
	for _, r := range []string{refusedUnauthenticated, refusedUnauthenticatedPerIP} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.refused, m.unauthenticated} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// unauthLimiter counts unauthenticated connections, in total and per
// remote IP, against caps (a cap <= 0 means none). The per-IP map holds
// only addresses with at least one connection counted.
type unauthLimiter struct {
	max, maxPerIP int
	m             *metrics

	mu    sync.Mutex
	total int            // Guarded by mu.
	perIP map[string]int // Guarded by mu.
}

func newUnauthLimiter(max, maxPerIP int, m *metrics) *unauthLimiter {
	return &unauthLimiter{max: max, maxPerIP: maxPerIP, m: m, perIP: make(map[string]int)}
}

// acquire takes a slot for ip. When a cap is reached it takes none, counts
// the refusal and returns its reason.
func (l *unauthLimiter) acquire(ip string) (refused string) {
	l.mu.Lock()
	switch {
	case l.max > 0 && l.total >= l.max:
		refused = refusedUnauthenticated
	case l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP:
		refused = refusedUnauthenticatedPerIP
	default:
		l.total++
		l.perIP[ip]++
	}
	l.mu.Unlock()
	if refused != "" {
		l.m.refused.WithLabelValues(refused).Inc()
		return refused
	}
	l.m.unauthenticated.Inc()
	return ""
}

// release gives back a slot acquire took for ip.
func (l *unauthLimiter) release(ip string) {
	l.mu.Lock()
	l.total--
	if l.perIP[ip] <= 1 {
		delete(l.perIP, ip)
	} else {
		l.perIP[ip]--
	}
	l.mu.Unlock()
	l.m.unauthenticated.Dec()
}

// remoteIP is the host part of a request's remote address: the TCP peer.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// refuseOverCap answers an upgrade refused for a cap: 503, a Retry-After
// and a short reason, and the connection is closed after the answer so
// that the refused client holds no socket.
func refuseOverCap(w http.ResponseWriter, reason string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	w.Header().Set("Connection", "close")
	msg := "too many unauthenticated connections, retry later"
	if reason == refusedUnauthenticatedPerIP {
		msg = "too many unauthenticated connections from this address, retry later"
	}
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// newHTTPServer is the node's http.Server, with its timeouts. Headers get
// at most 10 s (less when ReadTimeout is shorter), the whole request
// ReadTimeout.
func (n *Node) newHTTPServer() *http.Server {
	header := 10 * time.Second
	if n.cfg.ReadTimeout > 0 {
		header = min(header, n.cfg.ReadTimeout)
	}
	return &http.Server{
		Handler:           n.handler,
		ReadHeaderTimeout: header,
		ReadTimeout:       n.cfg.ReadTimeout,
		IdleTimeout:       n.cfg.IdleTimeout,
		ErrorLog:          n.httpErrorLog(),
	}
}

// Authenticated implements hub.AuthWatcher: the session no longer counts
// against the caps on unauthenticated connections.
func (c *wsConn) Authenticated() { c.releaseUnauth() }

// releaseUnauth gives back the connection's unauthenticated slot, once.
func (c *wsConn) releaseUnauth() {
	if c.unauthCounted.CompareAndSwap(true, false) {
		c.node.unauth.release(c.unauthIP)
	}
}

// wsConn must stay an AuthWatcher, or authenticated sessions would keep
// their unauthenticated slots until they end.
var _ hub.AuthWatcher = (*wsConn)(nil)
