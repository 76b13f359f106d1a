package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub"
	"github.com/go-chi/chi/v5"
)

func (n *Node) routes() http.Handler {
	r := chi.NewRouter()
	r.Get("/ws", n.serveWS)
	r.Get("/healthz", n.serveHealth)
	r.Get("/livez", n.serveLive)
	r.Get("/readyz", n.serveReady)
	r.Post("/api/login", n.serveLogin)
	if n.cfg.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", n.cfg.Metrics)
	}
	if n.cfg.Debug {
		r.HandleFunc("/debug/pprof/*", pprof.Index)
		r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		r.HandleFunc("/debug/pprof/profile", pprof.Profile)
		r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		r.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if n.cfg.Dashboard != nil {
		r.Handle("/*", n.cfg.Dashboard)
	} else {
		r.Get("/", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("fleethub node " + n.hub.NodeID() + ": WebSocket on /ws, health on /livez, /readyz and /healthz, metrics on /metrics\n"))
		})
	}
	return r
}

// serveHealth is GET /healthz: 200 while the node is connected to NATS,
// serving, and has every bucket and stream it needs; 503 otherwise.
func (n *Node) serveHealth(w http.ResponseWriter, _ *http.Request) {
	h := n.hub.Health()
	if n.stopping.Load() || !n.hub.Ready() || len(h.Missing) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "node": n.hub.NodeID(), "missing": n.missing(h)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "node": n.hub.NodeID(), "sessions": n.hub.SessionCount()})
}

// serveLive is GET /livez: 200 while the process runs.
func (n *Node) serveLive(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "live", "node": n.hub.NodeID()})
}

// serveReady is GET /readyz: 200 only while the node is connected to NATS,
// JetStream answers and every bucket and stream the node needs is
// present; 503 otherwise, naming what is missing.
func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	h := n.hub.Health()
	if n.stopping.Load() || !h.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "node": n.hub.NodeID(), "missing": n.missing(h)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "node": n.hub.NodeID()})
}

// missing names what keeps the node from being ready: "stopping" (the
// node shuts down) or "serving" (the hub is not started, or stops),
// "nats", "jetstream", and the missing buckets and streams.
func (n *Node) missing(h hub.Health) []string {
	out := []string{}
	switch {
	case n.stopping.Load():
		out = append(out, "stopping")
	case !h.Serving:
		out = append(out, "serving")
	}
	if !h.Connected {
		out = append(out, "nats")
	} else if !h.JetStream {
		out = append(out, "jetstream")
	}
	return append(out, h.Missing...)
}

type loginRequest struct {
	Username *string `json:"username"`
	Password *string `json:"password"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt int64     `json:"expires_at"`
	Role      auth.Role `json:"role"`
	Groups    []string  `json:"groups"`
}

// serveLogin is POST /api/login, for scripts.
func (n *Node) serveLogin(w http.ResponseWriter, r *http.Request) {
	req, ok := readLogin(w, r)
	if !ok {
		return
	}
	if req.Username == nil || req.Password == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"msg": "username and password are required"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	token, c, err := n.hub.Login(ctx, r.RemoteAddr, *req.Username, *req.Password)
	var throttled *hub.ThrottledError
	switch {
	case errors.Is(err, auth.ErrBadPassword):
		writeJSON(w, http.StatusUnauthorized, map[string]string{"msg": "wrong username or password"})
	case errors.As(err, &throttled):
		secs := hub.RetryAfterSeconds(throttled.RetryAfter)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"msg": fmt.Sprintf("too many failed logins: try again in %d s", secs)})
	case err != nil:
		n.log.Error("login failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"msg": "login unavailable, try again"})
	default:
		writeJSON(w, http.StatusOK, loginResponse{Token: token, ExpiresAt: c.ExpiresAt.UnixMilli(), Role: c.Role, Groups: c.Groups})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
