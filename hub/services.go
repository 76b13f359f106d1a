package hub

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
)

// errAsync tells handleLine that a handler answers later, on its own.
var errAsync = &wire.Error{Code: -1, Msg: "async"}

// handler serves one request of an authenticated session.
type handler func(s *Session, m *wire.Message) (any, *wire.Error)

// service is a service the hub serves itself.
type service struct {
	roles   []auth.Role // who may call it; empty means any authenticated session
	handler handler
}

func (srv *Server) builtinServices() map[string]service {
	admins := []auth.Role{auth.RoleAdmin}
	watchers := []auth.Role{auth.RoleAdmin, auth.RoleViewer}
	devices := []auth.Role{auth.RoleDevice}
	return map[string]service{
		"/device/status":     {roles: devices, handler: srv.serveStatus},
		"/device/event":      {roles: devices, handler: srv.serveEvent},
		"/admin/history":     {roles: watchers, handler: srv.serveHistory},
		"/ping":              {handler: srv.servePing},
		"/admin/subscribe":   {roles: watchers, handler: srv.serveSubscribe},
		"/admin/unsubscribe": {roles: watchers, handler: srv.serveUnsubscribe},
		"/admin/devices":     {roles: watchers, handler: srv.serveDevices},
		"/admin/push":        {roles: admins, handler: srv.serveAdminPush},
		"/admin/command":     {roles: admins, handler: srv.serveAdminCommand},
		"/admin/kick":        {roles: admins, handler: srv.serveAdminKick},
		"/admin/nodes":       {roles: watchers, handler: srv.serveNodes},
		"/admin/forget":      {roles: admins, handler: srv.serveForget},
	}
}

// authServices are the only services a session may call before it has
// authenticated.
func isAuthService(name string) bool {
	return name == "/auth/device" || name == "/auth/login" || name == "/auth/token"
}

// serve routes one request.
func (srv *Server) serve(s *Session, m *wire.Message) (any, *wire.Error) {
	id := s.Identity()
	if isAuthService(m.Service) {
		if id != nil {
			return nil, wire.Errorf(wire.CodeConflict, "session is already authenticated")
		}
		return srv.serveAuth(s, m)
	}
	if id == nil {
		return nil, wire.Errorf(wire.CodeUnauthorized, "not authenticated: the first request must be /auth/device, /auth/login or /auth/token")
	}
	if svc, ok := srv.services[m.Service]; ok {
		if len(svc.roles) > 0 && !hasRole(svc.roles, id.Role) {
			return nil, wire.Errorf(wire.CodeForbidden, m.Service+" is not allowed for role "+string(id.Role))
		}
		return svc.handler(s, m)
	}
	if !subjects.ValidPath(m.Service) {
		return nil, wire.Errorf(wire.CodeBadRequest, "service: not a valid service path (want /a/b, segments without '.', '*', '>' or spaces)")
	}
	return srv.forwardService(s, m)
}

func hasRole(roles []auth.Role, r auth.Role) bool {
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}

// servePing answers /ping with the server's clock.
func (srv *Server) servePing(_ *Session, _ *wire.Message) (any, *wire.Error) {
	return map[string]int64{"server_time_ms": srv.cfg.Now().UnixMilli()}, nil
}

// runAsync serves a slow request off the read goroutine, bounded per
// session, and answers when done.
func (srv *Server) runAsync(s *Session, m *wire.Message, f func(ctx context.Context) (any, *wire.Error)) (any, *wire.Error) {
	if !s.beginAsync() {
		return nil, wire.Errorf(wire.CodeRateLimited, "too many requests in flight")
	}
	msg := *m
	if !srv.goTask(func() {
		defer s.endAsync()
		values, werr := f(srv.runCtx)
		if !s.isClosed() {
			s.reply(&msg, values, werr)
		}
	}) {
		s.endAsync()
		return nil, errStopping
	}
	return nil, errAsync
}

// knownServices keeps the requests metric's service label bounded.
var knownServices = map[string]bool{
	"/auth/device": true, "/auth/login": true, "/auth/token": true, "/ping": true,
	"/device/status": true, "/device/event": true,
	"/admin/subscribe": true, "/admin/unsubscribe": true, "/admin/devices": true,
	"/admin/history": true, "/admin/command": true, "/admin/push": true, "/admin/kick": true,
	"/admin/nodes": true, "/admin/forget": true,
}

func serviceLabel(name string) string {
	if knownServices[name] {
		return name
	}
	if name == "" {
		return "none"
	}
	return "other"
}

func codeLabel(code int) string { return strconv.Itoa(code) }

// errBusDown answers requests that need NATS while the node is cut off
// from it. nats.go would buffer a publish and retry a request until it
// times out; the caller is better served by an immediate, honest 503.
var errBusDown = wire.Errorf(wire.CodeUnavailable, "message bus unavailable")

// errStopping answers requests that arrive while the node shuts down.
var errStopping = wire.Errorf(wire.CodeUnavailable, "node stopping: reconnect to another node")

// busDown reports whether the node is cut off from NATS.
func (srv *Server) busDown() bool { return !srv.nc.IsConnected() }

// natsFailure maps a bus error to a client answer.
func natsFailure(err error, what string) *wire.Error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "timeout"):
		return wire.Errorf(wire.CodeTimeout, what+" did not answer in time")
	default:
		return wire.Errorf(wire.CodeUnavailable, "message bus unavailable")
	}
}
