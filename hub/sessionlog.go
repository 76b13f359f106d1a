package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/auth"
)

// Session starts and ends are logged one by one at debug only: a
// reconnect wave of tens of thousands of devices would otherwise be tens
// of thousands of lines. At info, every SessionLogInterval that saw any,
// one line says how many sessions started (by role) and ended (by
// reason), and how many are open.
type sessionLog struct {
	mu      sync.Mutex // taken alone
	started map[auth.Role]int
	ended   map[Reason]int
}

func (l *sessionLog) start(role auth.Role) {
	l.mu.Lock()
	if l.started == nil {
		l.started = map[auth.Role]int{}
	}
	l.started[role]++
	l.mu.Unlock()
}

func (l *sessionLog) end(reason Reason) {
	l.mu.Lock()
	if l.ended == nil {
		l.ended = map[Reason]int{}
	}
	l.ended[reason]++
	l.mu.Unlock()
}

// take returns the tallies since the last take and starts new ones.
func (l *sessionLog) take() (map[auth.Role]int, map[Reason]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, e := l.started, l.ended
	l.started, l.ended = nil, nil
	return s, e
}

// tally is m as "k=v k=v", keys sorted, and the sum of its values.
func tally[K ~string](m map[K]int) (string, int) {
	keys := make([]K, 0, len(m))
	sum := 0
	for k, n := range m {
		keys = append(keys, k)
		sum += n
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String(), sum
}

// logSessions writes the summary line every SessionLogInterval that saw a
// session start or end, until ctx ends, and once more then.
func (s *Server) logSessions(ctx context.Context) {
	t := time.NewTicker(s.cfg.SessionLogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushSessionLog()
			return
		case <-t.C:
			s.flushSessionLog()
		}
	}
}

func (s *Server) flushSessionLog() {
	started, ended := s.sessionLog.take()
	if len(started) == 0 && len(ended) == 0 {
		return
	}
	byRole, nStarted := tally(started)
	byReason, nEnded := tally(ended)
	s.log.Info("sessions", "started", nStarted, "by_role", byRole, "ended", nEnded, "by_reason", byReason,
		"open", s.SessionCount(), "interval", s.cfg.SessionLogInterval)
}
