package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
)

// maxAuthFailures is how many failed auth requests a session may make
// before it is closed with 1008.
const maxAuthFailures = 5

type loginArgs struct {
	Username *string `json:"username"`
	Password *string `json:"password"`
}

type tokenArgs struct {
	Token *string `json:"token"`
}

// authValues is the answer to a successful auth request.
type authValues struct {
	Session        string    `json:"session"`
	Role           auth.Role `json:"role"`
	Node           string    `json:"node"`
	PingIntervalMS int64     `json:"ping_interval_ms"`
	Token          string    `json:"token,omitempty"`
	ExpiresAt      int64     `json:"expires_at,omitempty"`
	SN             string    `json:"sn,omitempty"`
	Type           string    `json:"type,omitempty"`
	Group          string    `json:"group,omitempty"`
	User           string    `json:"user,omitempty"`
	Groups         []string  `json:"groups,omitempty"`
}

// encode renders v as json.Marshal does, byte for byte, without its
// reflection: every session's auth is answered with one, and a connect
// storm answers one a device.
func (v *authValues) encode() json.RawMessage {
	b := make([]byte, 0, 192)
	b = append(b, `{"session":`...)
	b = wire.AppendString(b, v.Session)
	b = append(b, `,"role":`...)
	b = wire.AppendString(b, string(v.Role))
	b = append(b, `,"node":`...)
	b = wire.AppendString(b, v.Node)
	b = append(b, `,"ping_interval_ms":`...)
	b = strconv.AppendInt(b, v.PingIntervalMS, 10)
	if v.Token != "" {
		b = append(b, `,"token":`...)
		b = wire.AppendString(b, v.Token)
	}
	if v.ExpiresAt != 0 {
		b = append(b, `,"expires_at":`...)
		b = strconv.AppendInt(b, v.ExpiresAt, 10)
	}
	for _, f := range [...]struct{ key, v string }{
		{`,"sn":`, v.SN}, {`,"type":`, v.Type}, {`,"group":`, v.Group}, {`,"user":`, v.User},
	} {
		if f.v != "" {
			b = append(b, f.key...)
			b = wire.AppendString(b, f.v)
		}
	}
	if len(v.Groups) > 0 {
		b = append(b, `,"groups":[`...)
		for i, g := range v.Groups {
			if i > 0 {
				b = append(b, ',')
			}
			b = wire.AppendString(b, g)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// authRequestTimeout bounds one auth request: the nonce claim, the
// subscriptions and the presence entry it waits for. The auth timeout is
// held meanwhile, so this is what bounds a session's wait for an answer
// to an auth request it sent in time.
const authRequestTimeout = 5 * time.Second

// loginWait bounds how long a password login waits for its address's turn
// and a bcrypt slot (then authRequestTimeout bounds the rest of it, as for
// any auth request). The auth timeout is held meanwhile: a login sent in
// time waits for its answer however many logins are ahead of it, up to
// this (the per-address turns and the caps on unauthenticated connections
// bound how many there can be).
const loginWait = 30 * time.Second

// serveAuth serves an auth request. The auth timeout stops while it is
// served (HandleFrame stopped it already when the frame came): a request
// sent in time is answered, however slow JetStream is or however many
// logins wait for bcrypt. A refused request restarts what was left of the
// timeout; one answered "try again" (429 throttled, 503 busy or
// unavailable) restarts it in full, so that the client has the time to do
// so. Failed auth requests of a session are counted, "try again" answers
// included, and the session is closed with 1008 at maxAuthFailures, which
// bounds how long a session can stay unauthenticated.
func (srv *Server) serveAuth(s *Session, m *wire.Message) (any, *wire.Error) {
	if !s.holdAuthTimeout() {
		// The timeout fell as the request came: the session is closing.
		return nil, wire.Errorf(wire.CodeUnauthorized, "authentication timeout")
	}
	var (
		values any
		werr   *wire.Error
	)
	if m.Service == "/auth/login" {
		values, werr = srv.authLogin(s, m)
	} else {
		// Once the auth pool gives a slot: authRequestTimeout runs from
		// then.
		ran := srv.auths.do(srv.runCtx, authQueueWait, func() {
			ctx, cancel := context.WithTimeout(srv.runCtx, authRequestTimeout)
			defer cancel()
			if m.Service == "/auth/device" {
				values, werr = srv.authDevice(ctx, s, m)
			} else {
				values, werr = srv.authToken(ctx, s, m)
			}
		})
		if !ran {
			srv.metrics.authFailures.WithLabelValues("busy").Inc()
			werr = wire.Errorf(wire.CodeUnavailable, "authentication is busy, try again")
		}
	}
	if werr == nil {
		return values, nil
	}
	retry := werr.Code == wire.CodeRateLimited || werr.Code == wire.CodeUnavailable
	s.resumeAuthTimeout(retry)
	if retry || werr.Code == wire.CodeUnauthorized {
		s.mu.Lock()
		s.authFails++
		n := s.authFails
		s.mu.Unlock()
		if n >= maxAuthFailures {
			s.logger().Warn("closing session after repeated auth failures", "failures", n)
			s.closeLater(wire.ClosePolicy, "too many failed authentication attempts")
		}
	}
	return nil, werr
}

// holdAuthTimeout stops the auth timer while an auth request is served,
// keeping what is left of it. It reports false when the timeout has fallen
// already.
func (s *Session) holdAuthTimeout() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil {
		return !s.closed // held already: a request before this one failed to resume it
	}
	if !s.timer.Stop() {
		return false
	}
	s.timer = nil
	s.authLeft = time.Until(s.authDeadline)
	return true
}

// resumeAuthTimeout restarts the auth timer of a session that is still
// unauthenticated, with what was left of it, or in full when full is set.
// It does nothing when the timer runs already.
func (s *Session) resumeAuthTimeout(full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.timer != nil || s.Identity() != nil {
		return
	}
	left := max(s.authLeft, 0)
	if full {
		left = s.srv.cfg.AuthTimeout
	}
	s.authDeadline = time.Now().Add(left)
	s.timer = time.AfterFunc(left, s.authTimedOut)
}

func missing(field string) *wire.Error {
	return wire.Errorf(wire.CodeBadRequest, "args."+field+": missing")
}

func (srv *Server) authDevice(ctx context.Context, s *Session, m *wire.Message) (any, *wire.Error) {
	a, werr := decodeDeviceArgs(m.Args)
	if werr != nil {
		return nil, werr
	}
	if err := srv.devices.Verify(ctx, a.proof); err != nil {
		reason, werr := deviceAuthFailure(err)
		srv.metrics.authFailures.WithLabelValues(reason).Inc()
		s.logger().Warn("device auth refused", "sn", a.proof.SN, "reason", reason)
		return nil, werr
	}
	sn := a.proof.SN
	typ, group := a.typ, "default"
	if d, ok := srv.registry.get(sn); ok {
		typ, group = d.Type, d.Group
	} else if srv.cfg.RequireRegistered {
		srv.metrics.authFailures.WithLabelValues("unregistered").Inc()
		return nil, wire.Errorf(wire.CodeUnauthorized, "device "+sn+" is not registered")
	} else {
		if typ == "" {
			typ = "unknown"
		}
		if !subjects.ValidToken(typ) || len(typ) > 64 {
			return nil, wire.Errorf(wire.CodeBadRequest, "args.type: must be 1 to 64 characters without '.', '*', '>' or spaces")
		}
	}
	id := &Identity{Role: auth.RoleDevice, SN: sn, Type: typ, Group: group, AuthAt: srv.cfg.Now()}
	// The presence writes that follow are requests on the node's
	// connection: their answers confirm the subscriptions (see
	// joinInterests), and the device is answered only after them.
	if werr := srv.establish(ctx, s, id, false); werr != nil {
		return nil, werr
	}
	srv.replaceOlder(id, s)
	if err := srv.presence.connected(ctx, s); err != nil {
		s.logger().Error("presence not recorded", "err", err)
		s.closeLater(wire.CloseInternal, "presence unavailable")
		return nil, wire.Errorf(wire.CodeUnavailable, "presence store unavailable, try again")
	}
	v := authValues{
		Session: s.id, Role: auth.RoleDevice, Node: srv.cfg.NodeID,
		PingIntervalMS: srv.cfg.PingInterval.Milliseconds(),
		SN:             sn, Type: typ, Group: group,
	}
	return v.encode(), nil
}

func deviceAuthFailure(err error) (string, *wire.Error) {
	switch {
	case errors.Is(err, auth.ErrBadSerial):
		return "bad_serial", wire.Errorf(wire.CodeUnauthorized, "invalid serial number: 1 to 64 characters of A-Z a-z 0-9 _ -")
	case errors.Is(err, auth.ErrBadNonce):
		return "bad_nonce", wire.Errorf(wire.CodeUnauthorized, "invalid nonce: 1 to 128 printable ASCII characters")
	case errors.Is(err, auth.ErrClockSkew):
		return "clock_skew", wire.Errorf(wire.CodeUnauthorized, "timestamp outside the allowed clock skew")
	case errors.Is(err, auth.ErrBadSignature):
		return "bad_signature", wire.Errorf(wire.CodeUnauthorized, "bad signature")
	case errors.Is(err, auth.ErrReplay):
		return "replay", wire.Errorf(wire.CodeUnauthorized, "nonce already used (replayed signature)")
	}
	return "store_unavailable", wire.Errorf(wire.CodeUnavailable, "replay protection unavailable, try again")
}

func (srv *Server) authLogin(s *Session, m *wire.Message) (any, *wire.Error) {
	var a loginArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	if a.Username == nil {
		return nil, missing("username")
	}
	if a.Password == nil {
		return nil, missing("password")
	}
	wait, cancelWait := context.WithTimeout(srv.runCtx, loginWait)
	token, claims, err := srv.Login(wait, s.remote, *a.Username, *a.Password)
	cancelWait()
	if err != nil {
		return nil, loginFailure(err)
	}
	ctx, cancel := context.WithTimeout(srv.runCtx, authRequestTimeout)
	defer cancel()
	return srv.establishAdmin(ctx, s, token, claims)
}

func loginFailure(err error) *wire.Error {
	if errors.Is(err, auth.ErrBadPassword) {
		return wire.Errorf(wire.CodeUnauthorized, "wrong username or password")
	}
	var te *ThrottledError
	if errors.As(err, &te) {
		return wire.Errorf(wire.CodeRateLimited, fmt.Sprintf("too many failed logins: try again in %d s", RetryAfterSeconds(te.RetryAfter)))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Waited too long for bcrypt, or the node stops.
		return wire.Errorf(wire.CodeUnavailable, "login is busy, try again")
	}
	return wire.Errorf(wire.CodeInternal, "internal error")
}

func (srv *Server) authToken(ctx context.Context, s *Session, m *wire.Message) (any, *wire.Error) {
	var a tokenArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	if a.Token == nil {
		return nil, missing("token")
	}
	claims, err := srv.CheckToken(*a.Token)
	if err != nil {
		if errors.Is(err, auth.ErrTokenExpired) {
			srv.metrics.authFailures.WithLabelValues("token_expired").Inc()
			return nil, wire.Errorf(wire.CodeUnauthorized, "token expired")
		}
		srv.metrics.authFailures.WithLabelValues("bad_token").Inc()
		return nil, wire.Errorf(wire.CodeUnauthorized, "invalid token")
	}
	return srv.establishAdmin(ctx, s, *a.Token, claims)
}

func (srv *Server) establishAdmin(ctx context.Context, s *Session, token string, c auth.Claims) (any, *wire.Error) {
	id := &Identity{Role: c.Role, User: c.User, Groups: c.Groups, ExpiresAt: c.ExpiresAt, AuthAt: srv.cfg.Now()}
	if werr := srv.establish(ctx, s, id, true); werr != nil {
		return nil, werr
	}
	v := authValues{
		Session: s.id, Role: c.Role, Node: srv.cfg.NodeID,
		PingIntervalMS: srv.cfg.PingInterval.Milliseconds(),
		Token:          token, ExpiresAt: c.ExpiresAt.UnixMilli(),
		User: c.User, Groups: c.Groups,
	}
	return v.encode(), nil
}

// establish makes id the session's identity: it joins the session's
// interests and swaps the auth timeout for the token's expiry. confirm
// waits for the NATS server to have new subscriptions; a caller that makes
// a request on the node's connection before it answers needs no wait
// (see joinInterests).
func (srv *Server) establish(ctx context.Context, s *Session, id *Identity, confirm bool) *wire.Error {
	subjs, err := interestsOf(id)
	if err != nil {
		return wire.Errorf(wire.CodeBadRequest, err.Error())
	}
	if err := s.joinInterests(ctx, subjs, confirm); err != nil {
		s.logger().Error("subscribe failed", "err", err)
		return wire.Errorf(wire.CodeUnavailable, "message bus unavailable")
	}
	if !s.ident.CompareAndSwap(nil, id) {
		return wire.Errorf(wire.CodeConflict, "session is already authenticated")
	}
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !id.ExpiresAt.IsZero() && !s.closed {
		s.timer = time.AfterFunc(id.ExpiresAt.Sub(srv.cfg.Now()), s.tokenExpired)
	}
	s.mu.Unlock()
	s.notifyAuthenticated()
	srv.metrics.sessions.WithLabelValues(string(id.Role)).Inc()
	if srv.log.Enabled(srv.runCtx, slog.LevelDebug) {
		s.logger().Debug("session authenticated") // its logger costs a few allocations
	}
	srv.sessionLog.start(id.Role)
	return nil
}
