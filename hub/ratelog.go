package hub

import (
	"log/slog"
	"sync"
	"time"
)

// logLimiter bounds per-message warnings (a bad push, an overflow, a
// storm): each distinct message is logged at most once per interval, with
// the count of the ones left out since, so that a flood of bad input
// cannot flood the log. Counters, not logs, are the exact record.
type logLimiter struct {
	interval time.Duration

	mu    sync.Mutex
	kinds map[string]*logKind // by message; bounded by the code's messages. Guarded by mu.
}

type logKind struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, kinds: make(map[string]*logKind)}
}

// allow reports whether msg may be logged now, and how many were left out
// since it last was.
func (l *logLimiter) allow(msg string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[msg]
	if k == nil {
		k = &logKind{}
		l.kinds[msg] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.interval {
		k.suppressed++
		return false, 0
	}
	k.last, suppressed, k.suppressed = now, k.suppressed, 0
	return true, suppressed
}

// warnLimited logs a per-message warning at a bounded rate. msg must be a
// constant: it is the key the rate is kept by.
func (srv *Server) warnLimited(msg string, args ...any) {
	srv.warnLimitedTo(srv.log, msg, args...)
}

func (srv *Server) warnLimitedTo(l *slog.Logger, msg string, args ...any) {
	ok, suppressed := srv.logLimit.allow(msg, time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	l.Warn(msg, args...)
}
