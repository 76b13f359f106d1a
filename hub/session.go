package hub

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/nats-io/nuid"
	"golang.org/x/time/rate"
)

// Transport is one client connection as the hub sees it.
//
// Send queues one frame (one or more newline-delimited messages) and must
// never block: when the connection's bounded queue is full it returns
// ErrQueueFull, and the hub then closes the session as a slow consumer.
// The frame must not be modified by the transport; the same bytes may be
// queued to many sessions at once.
//
// Close ends the connection with a WebSocket close code and reason. It may
// be called more than once and from any goroutine; only the first call
// counts. The transport reports the end of the connection, whatever caused
// it, by calling Session.Gone once.
type Transport interface {
	Send(frame []byte) error
	Close(code int, reason string)
}

// Identity is who a session is, fixed at authentication.
type Identity struct {
	Role auth.Role
	// Devices.
	SN, Type, Group string
	// Admins and viewers.
	User      string
	Groups    []string
	ExpiresAt time.Time // token expiry; zero for devices
	// AuthAt orders sessions of the same device: the later one wins.
	AuthAt time.Time
}

// Session is one client connection.
//
// The transport calls HandleFrame and HandleBinary for one frame at a
// time, in the order received, and reads no further frame until the call
// returns. "The read goroutine" below is whichever goroutine makes that
// call: the node hands each frame to a worker and waits (node/frames.go),
// so that the goroutine reading the socket keeps a small stack.
type Session struct {
	id     string
	srv    *Server
	t      Transport
	remote string

	ident atomic.Pointer[Identity] // nil until authenticated; never changes after

	mu          sync.Mutex
	closed      bool               // Guarded by mu.
	recordsBusy bool               // the records' writer runs (recordqueue.go). Guarded by mu.
	authFails   int                // Guarded by mu.
	timer       *time.Timer        // auth timeout, then token expiry. Guarded by mu.
	interests   []string           // subjects joined. Guarded by mu.
	pending     map[string]*cmdReq // commands sent to this device. Guarded by mu.
	inflight    int                // async requests running. Guarded by mu.
	// Status and event records waiting to be stored, oldest first
	// (recordqueue.go). Guarded by mu.
	records   []*pendingRecord
	recordSeq uint64 // records accepted, for their Nats-Msg-Id. Guarded by mu.
	// Records queued or being stored: MaxPendingRecords bounds it.
	// Guarded by mu.
	recordsWaiting int
	cmdSeq         uint64                  // Guarded by mu.
	closeCode      int                     // the code the hub closed with. Guarded by mu.
	subs           map[string]subscription // admin subscriptions by selector. Guarded by mu.
	// A close decided while answering (abuse, failed auths): it waits until
	// the answers already due are queued. Made when decided, which few
	// sessions are. Guarded by mu.
	closeAfter *closeDecision
	// When the auth timeout falls, and what is left of it while an auth
	// request is served (see holdAuthTimeout). Guarded by mu.
	authDeadline time.Time
	authLeft     time.Duration

	storm *storm // devices' storm control. Owned by the read goroutine.
	// The current stretch of time over the rate limit: since when
	// requests are refused, and when the last one was (Unix ns; 0 when
	// not over). Owned by the read goroutine.
	overSince, lastRefused int64
	// frameRoom is how many answer bytes the frame being handled has left
	// (MaxAnswerBytes outside HandleFrame). Owned by the read goroutine.
	frameRoom int
	// Limiters are held inline: a pointer each would cost an allocation
	// per idle session.
	msgLimit   rate.Limiter // requests per second
	abuseLimit rate.Limiter // failed requests; empty means close with 1008

	cost sessionCost // admission of expensive requests (admission.go)
}

func newSession(srv *Server, t Transport, remote string) *Session {
	s := &Session{
		id:     nuid.Next(),
		srv:    srv,
		t:      t,
		remote: remote,
	}
	s.frameRoom = srv.cfg.MaxAnswerBytes
	setLimit(&s.msgLimit, srv.cfg.MessageRate, srv.cfg.MessageBurst)
	setLimit(&s.abuseLimit, 1, srv.cfg.AbuseBurst)
	s.mu.Lock()
	s.timer = time.AfterFunc(srv.cfg.AuthTimeout, s.authTimedOut)
	s.authDeadline = time.Now().Add(srv.cfg.AuthTimeout)
	s.mu.Unlock()
	return s
}

// setLimit configures a zero rate.Limiter in place. Setting it as of long
// ago lets its bucket fill, so it starts full, as rate.NewLimiter's does.
func setLimit(l *rate.Limiter, r float64, burst int) {
	longAgo := time.Unix(0, 0)
	l.SetBurstAt(longAgo, burst)
	l.SetLimitAt(longAgo, rate.Limit(r))
}

// logger scopes the server's logger to the session. It is built per call:
// sessions log rarely (lifecycle, misbehaviour), and a logger kept per
// session would cost memory on every idle connection.
func (s *Session) logger() *slog.Logger {
	l := s.srv.log.With("session", s.id)
	if id := s.Identity(); id != nil {
		if id.Role == auth.RoleDevice {
			l = l.With("role", id.Role, "sn", id.SN)
		} else {
			l = l.With("role", id.Role, "user", id.User)
		}
	}
	return l
}

// ID is the session's unique id.
func (s *Session) ID() string { return s.id }

// Identity is the session's identity, or nil before authentication.
func (s *Session) Identity() *Identity { return s.ident.Load() }

func (s *Session) authTimedOut() {
	if s.Identity() != nil {
		return
	}
	s.srv.metrics.authFailures.WithLabelValues("timeout").Inc()
	s.logger().Debug("auth timeout")
	s.Close(wire.ClosePolicy, "authentication timeout")
}

func (s *Session) tokenExpired() {
	s.Close(wire.CloseTokenExpired, "token expired")
}

// Close ends the session with a WebSocket close code. The transport reports
// the end through Gone.
func (s *Session) Close(code int, reason string) {
	s.mu.Lock()
	if s.closeCode == 0 {
		s.closeCode = code
	}
	s.mu.Unlock()
	s.t.Close(code, reason)
}

// send queues a frame, closing the session as a slow consumer when its
// queue is full. It reports whether the frame was queued.
func (s *Session) send(frame []byte) bool {
	err := s.t.Send(frame)
	if err == nil {
		return true
	}
	if err == ErrQueueFull {
		s.SlowConsumer()
	}
	return false
}

// SlowConsumer closes a session whose outbound queue overflowed, with a
// code that tells the client to reconnect and take a fresh snapshot, and
// counts it. The transport calls it when a queued frame overflows later.
func (s *Session) SlowConsumer() {
	s.srv.metrics.slowConsumers.Inc()
	s.logger().Warn("slow consumer: outbound queue full")
	s.Close(wire.CloseSlowConsumer, "slow consumer")
}

// Gone is called by the transport, once, when the connection has ended.
func (s *Session) Gone(reason schema.Reason) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	interests := s.interests
	s.interests = nil
	pending := s.pending
	s.pending = nil
	switch s.closeCode {
	case wire.CloseReplaced:
		reason = schema.ReasonReplaced
	case wire.CloseKicked, wire.ClosePolicy, wire.CloseSlowConsumer, wire.CloseTokenExpired:
		reason = schema.ReasonKicked
	}
	s.mu.Unlock()

	for _, subj := range interests {
		s.srv.interest.leave(subj, s)
	}
	for _, p := range pending {
		p.fail(wire.CodeUnavailable, "device disconnected")
	}
	s.srv.forget(s)
	s.srv.metrics.connections.Dec()
	if id := s.Identity(); id != nil && id.Role == auth.RoleDevice {
		s.srv.presence.disconnected(s, reason)
	} else {
		s.srv.dropSubscriptions(s)
	}
	if id := s.Identity(); id != nil {
		s.srv.metrics.sessions.WithLabelValues(string(id.Role)).Dec()
		if s.srv.log.Enabled(s.srv.runCtx, slog.LevelDebug) {
			s.logger().Debug("session ended", "reason", reason) // its logger costs a few allocations
		}
		s.srv.sessionLog.end(reason)
	}
}

// isClosed reports whether Gone was called.
func (s *Session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// HandleBinary answers a binary frame, which the protocol does not use.
func (s *Session) HandleBinary() {
	s.reply(nil, "", wire.Errorf(wire.CodeBadRequest, "binary frames are not supported; send UTF-8 JSON text frames"))
}

// HandleFrame handles one text frame from the client: one message or
// several separated by newlines, in order. Immediate answers are sent back
// together in one frame; slow ones (commands, backend services) follow on
// their own. When a message makes the hub close the session (repeated
// abuse), the messages after it are not handled, and the answers due so
// far go out before the close.
//
// Costs are bounded per frame. The answers of one frame together hold at
// most MaxAnswerBytes: an answer that would pass it is replaced by a 413,
// and the requests after it are not served (each gets a 413). Once a
// message is refused for the rate limit, the rest of the frame is not
// served either: each request still gets its answer, a 429, as the
// protocol promises one answer per request, and the read goroutine then
// pauses until the limit lets a request through again, so a flood is shed
// at the socket.
//
// The auth timeout of an unauthenticated session is held from when its
// frame is received until the frame is handled: the timeout bounds how
// long a client takes to send its auth request, not how long the hub
// takes to get to it (serveAuth, which holds it while the request is
// served, says more).
func (s *Session) HandleFrame(frame []byte) {
	held := s.Identity() == nil && s.holdAuthTimeout()
	var f frameState
	f.budget = s.srv.cfg.MaxAnswerBytes
	wire.Lines(frame, func(line []byte) {
		if s.closeDecided() {
			return
		}
		spent := f.budget <= 0
		b := s.handleLine(line, &f)
		if b == nil {
			return
		}
		if !spent {
			if len(b) > f.budget {
				b = s.failure(f.service, f.requestID, answerTooLarge(len(b), s.srv.cfg.MaxAnswerBytes))
				f.budget = 0 // nothing more fits: the requests after it get 413 unserved
			} else {
				f.budget -= len(b)
			}
		}
		f.out = append(f.out, b)
	})
	if len(f.out) > 0 {
		s.send(wire.Join(f.out))
	}
	s.closeIfDecided()
	if held {
		s.resumeAuthTimeout(false) // nothing when it authenticated, or an auth request resumed it
	}
	if f.limited {
		s.shed()
	}
}

// frameState is what HandleFrame keeps while it handles one frame.
type frameState struct {
	out                [][]byte
	budget             int    // answer bytes still free for the frame
	service, requestID string // of the message being handled
	limited            bool   // a message was refused for the rate limit
}

// errRateLimited answers a request over the session's rate limit.
var errRateLimited = wire.Errorf(wire.CodeRateLimited, "rate limited: too many requests")

// answerTooLarge is the 413 for an answer over the byte limit.
func answerTooLarge(size, limit int) *wire.Error {
	return wire.Errorf(wire.CodeTooLarge, fmt.Sprintf(
		"answer too large: %d bytes, more than the %d bytes a frame's answers may hold; ask for less (a smaller limit, a filter, or fewer requests per frame)", size, limit))
}

// overLimit records a request refused for the rate limit at now and
// reports whether the session has been over its limit for longer than
// RateLimitClose without a second's break.
func (s *Session) overLimit(now time.Time) bool {
	ns := now.UnixNano()
	if s.lastRefused == 0 || ns-s.lastRefused > int64(time.Second) {
		s.overSince = ns // a new stretch over the limit
	}
	s.lastRefused = ns
	return ns-s.overSince >= int64(s.srv.cfg.RateLimitClose)
}

// shed pauses the read goroutine after a rate-limited frame until the
// limit would let one request through (at most maxShed), so that a client
// sending too much is slowed by TCP back-pressure instead of burning a core
// on refusals.
func (s *Session) shed() {
	r := s.msgLimit.Reserve()
	d := r.Delay()
	r.Cancel()
	if d > 0 {
		time.Sleep(min(d, maxShed))
	}
}

// maxShed bounds shed's pause, so that a close or a pong is never held up
// for long.
const maxShed = 100 * time.Millisecond

// closeDecision is a close that waits for the answers due (closeLater).
type closeDecision struct {
	code   int
	reason string
}

// closeLater decides to close the session once the answers due are sent.
func (s *Session) closeLater(code int, reason string) {
	s.mu.Lock()
	if s.closeAfter == nil {
		s.closeAfter = &closeDecision{code: code, reason: reason}
	}
	s.mu.Unlock()
}

func (s *Session) closeDecided() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeAfter != nil
}

func (s *Session) closeIfDecided() {
	s.mu.Lock()
	d := s.closeAfter
	s.mu.Unlock()
	if d != nil {
		s.Close(d.code, d.reason)
	}
}

// handleLine handles one message and returns its immediate answer, if any.
// Every message, responses and repeated auth requests included, draws from
// the session's rate limit.
func (s *Session) handleLine(line []byte, f *frameState) []byte {
	m, werr := wire.Decode(line)
	f.service, f.requestID = m.Service, m.RequestID
	if werr != nil {
		return s.failure(m.Service, m.RequestID, werr)
	}
	if f.limited || !s.msgLimit.Allow() {
		// Past the limit, the rest of the frame is refused without asking
		// the limiter again: the frame is already over it.
		if !f.limited && s.overLimit(time.Now()) {
			s.srv.metrics.abuseCloses.Inc()
			s.logger().Warn("closing session over its rate limit for too long", "for", s.srv.cfg.RateLimitClose)
			s.closeLater(wire.ClosePolicy, "rate limit exceeded for too long")
		}
		f.limited = true
		if m.Op == wire.OpResponse {
			// A device's answer to a command is never answered itself.
			s.srv.metrics.responsesDropped.Inc()
			return nil
		}
		return s.failure(m.Service, m.RequestID, errRateLimited)
	}
	if m.Op == wire.OpResponse {
		s.handleResponse(&m)
		return nil
	}
	if f.budget <= 0 {
		// The frame's answers are full: not served, so not paid for.
		return s.failure(m.Service, m.RequestID, wire.Errorf(wire.CodeTooLarge, fmt.Sprintf(
			"not served: the answers to this frame already hold the %d bytes a frame's answers may; send it again in a later frame", s.srv.cfg.MaxAnswerBytes)))
	}
	s.frameRoom = f.budget
	values, werr := s.srv.serve(s, &m)
	s.frameRoom = s.srv.cfg.MaxAnswerBytes
	if werr == errAsync {
		return nil
	}
	if werr != nil {
		return s.failure(m.Service, m.RequestID, werr)
	}
	if !m.HasRequestID {
		// A success without request_id is not answered.
		return nil
	}
	s.srv.metrics.requests.WithLabelValues(serviceLabel(m.Service), "0").Inc()
	return wire.EncodeResponse(m.Service, m.RequestID, wire.CodeOK, "", values)
}

// failure encodes a failed answer and counts it against the session's abuse
// budget; a session that keeps failing is closed with 1008.
func (s *Session) failure(service, requestID string, e *wire.Error) []byte {
	s.srv.metrics.requests.WithLabelValues(serviceLabel(service), codeLabel(e.Code)).Inc()
	// Bad requests draw from the abuse budget. Rate limiting (429) and
	// size limits (413) do not: they are already the answer to too much,
	// bounded on their own, and a device over its storm limits keeps its
	// session, as the protocol says.
	if !e.Relayed && e.Code >= 400 && e.Code < 500 && e.Code != wire.CodeTimeout && e.Code != wire.CodeRateLimited && e.Code != wire.CodeTooLarge {
		if !s.abuseLimit.Allow() && !s.closeDecided() {
			s.srv.metrics.abuseCloses.Inc()
			s.logger().Warn("closing abusive session", "last_code", e.Code, "last_msg", e.Msg)
			s.closeLater(wire.ClosePolicy, "too many bad requests")
		}
	}
	return wire.EncodeError(service, requestID, e)
}

// reply sends one answer on its own frame (for answers that come later).
func (s *Session) reply(m *wire.Message, values any, e *wire.Error) {
	service, requestID, has := "", "", false
	if m != nil {
		service, requestID, has = m.Service, m.RequestID, m.HasRequestID
	}
	if e != nil {
		s.send(s.failure(service, requestID, e))
		s.closeIfDecided()
		return
	}
	if !has {
		s.srv.metrics.requests.WithLabelValues(serviceLabel(service), "0").Inc()
		return
	}
	b := wire.EncodeResponse(service, requestID, wire.CodeOK, "", values)
	if len(b) > s.srv.cfg.MaxAnswerBytes {
		s.send(s.failure(service, requestID, answerTooLarge(len(b), s.srv.cfg.MaxAnswerBytes)))
		return
	}
	s.srv.metrics.requests.WithLabelValues(serviceLabel(service), "0").Inc()
	s.send(b)
}

// flushTimeout bounds the wait for the NATS server to confirm new
// subscriptions.
const flushTimeout = 5 * time.Second

// joinInterests subscribes the session to each subject. When that made new
// subscriptions and confirm is set, it waits for the NATS server to have
// them, so that a push published right after the auth answer reaches the
// session. A caller that makes a request on the node's connection before
// it answers passes confirm false: the server handles a connection's
// messages in order, so the request's answer confirms the subscriptions
// sent before it, and the flush would be a round trip for nothing. On
// failure it leaves those it joined and returns the error.
func (s *Session) joinInterests(ctx context.Context, subjs []string, confirm bool) error {
	fresh := false
	for i, subj := range subjs {
		canonical, created, err := s.srv.interest.join(subj, s)
		if err != nil {
			for _, done := range subjs[:i] {
				s.srv.interest.leave(done, s)
			}
			return err
		}
		subjs[i] = canonical
		fresh = fresh || created
	}
	if fresh && confirm {
		ctx, cancel := context.WithTimeout(ctx, flushTimeout)
		defer cancel()
		if err := s.srv.nc.FlushWithContext(ctx); err != nil {
			for _, done := range subjs {
				s.srv.interest.leave(done, s)
			}
			return err
		}
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.interests = subjs
	}
	s.mu.Unlock()
	if closed {
		// The connection ended while we were authenticating.
		for _, subj := range subjs {
			s.srv.interest.leave(subj, s)
		}
	}
	return nil
}

// beginAsync reserves a slot for a slow request, or reports that the
// session has too many in flight.
func (s *Session) beginAsync() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight >= s.srv.cfg.MaxInflight {
		return false
	}
	s.inflight++
	return true
}

func (s *Session) endAsync() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
}
