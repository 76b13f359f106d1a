package hub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleethub/fleethub/hub/wire"
)

// Cost-based admission for the requests whose answers are expensive to
// build: /admin/history, which reads a stream, and the device listings
// (/admin/devices and the /admin/subscribe snapshot), which encode device
// views from the node's memory.
//
//   - Every such answer is built within Config.MaxAnswerBytes, envelope
//     included: a history keeps the newest records that fit, a listing
//     page stops early with a cursor. Nothing larger is ever built.
//   - History reads are bounded in number: per session and per node
//     (historyGate), so what streams into the node's NATS connection at
//     once is bounded, whatever the viewers ask.
//   - Listing bytes are bounded in rate per session (byteBucket): listing
//     frame after frame, a session gets its burst in pages, then 429 until
//     the bucket refills. (The answers of one frame together are bounded
//     by HandleFrame.)
//
// Locks: historyGate.mu and byteBucket.mu are each taken alone, with no
// other lock held and none taken under them.

// refusal is why admission refused a request: the label of
// fleethub_admission_refused_total.
type refusal string

const (
	refusedHistoryQueue refusal = "history_queue_full" // too many history reads already waiting
	refusedHistoryWait  refusal = "history_wait"       // no history slot freed in time
	refusedListBytes    refusal = "list_bytes"         // the session's listing byte budget ran out
)

// admission holds the node-wide admission state.
type admission struct {
	history *historyGate
	refused map[refusal]prometheus.Counter
}

func newAdmission(cfg *Config, m *metrics) *admission {
	a := &admission{refused: make(map[refusal]prometheus.Counter)}
	for _, r := range []refusal{refusedHistoryQueue, refusedHistoryWait, refusedListBytes} {
		a.refused[r] = m.admissionRefused.WithLabelValues(string(r))
	}
	a.history = &historyGate{
		perSession: cfg.HistoryReadsPerSession, perNode: cfg.HistoryReadsPerNode,
		queue: cfg.HistoryQueue, wait: cfg.HistoryWait,
		freed: make(chan struct{}),
	}
	return a
}

func (a *admission) refuse(r refusal) { a.refused[r].Inc() }

// sessionCost is a session's share of the admission state. Its zero value
// is ready: no history read running, a full listing bucket.
type sessionCost struct {
	historyRunning int // Guarded by historyGate.mu.
	list           byteBucket
}

// errHistoryBusy answers a history read that found no slot.
var errHistoryBusy = wire.Errorf(wire.CodeRateLimited, "too many history reads in flight; retry later")

// historyGate admits history reads: at most perSession of one session and
// perNode of the node run at once. A read that finds no slot waits for one,
// up to wait, with at most queue reads waiting node-wide; beyond either it
// is refused with 429. Waiters are woken on every release and race for the
// slot, so the order among them is not kept.
type historyGate struct {
	perSession, perNode, queue int
	wait                       time.Duration

	mu      sync.Mutex
	running int           // reads running on the node. Guarded by mu.
	waiting int           // reads waiting for a slot. Guarded by mu.
	freed   chan struct{} // closed, and replaced, when a slot frees. Guarded by mu.
}

// acquire takes a slot for one read by s. On success the caller must call
// release(s) when the read is done. ok is false when the session closed
// while waiting: no answer is due then.
func (g *historyGate) acquire(ctx context.Context, a *admission, s *Session) (ok bool, werr *wire.Error) {
	g.mu.Lock()
	if g.tryLocked(s) {
		g.mu.Unlock()
		return true, nil
	}
	if g.waiting >= g.queue {
		g.mu.Unlock()
		a.refuse(refusedHistoryQueue)
		return true, errHistoryBusy
	}
	g.waiting++
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	for {
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-timer.C:
			g.leaveQueue()
			a.refuse(refusedHistoryWait)
			return true, errHistoryBusy
		case <-ctx.Done():
			g.leaveQueue()
			return true, wire.Errorf(wire.CodeUnavailable, "history unavailable: node stopping")
		}
		if s.isClosed() {
			g.leaveQueue()
			return false, nil
		}
		g.mu.Lock()
		if g.tryLocked(s) {
			g.waiting--
			g.mu.Unlock()
			return true, nil
		}
	}
}

// tryLocked takes a slot if both bounds allow it. g.mu is held.
func (g *historyGate) tryLocked(s *Session) bool {
	if g.running >= g.perNode || s.cost.historyRunning >= g.perSession {
		return false
	}
	g.running++
	s.cost.historyRunning++
	return true
}

func (g *historyGate) leaveQueue() {
	g.mu.Lock()
	g.waiting--
	g.mu.Unlock()
}

// release frees the slot s took and wakes the waiters.
func (g *historyGate) release(s *Session) {
	g.mu.Lock()
	g.running--
	s.cost.historyRunning--
	close(g.freed)
	g.freed = make(chan struct{})
	g.mu.Unlock()
}

// byteBucket is a token bucket of bytes whose zero value is full: it keeps
// the bytes spent and not yet refilled, as of at.
type byteBucket struct {
	mu   sync.Mutex
	debt float64   // Guarded by mu.
	at   time.Time // Guarded by mu.
}

// refillLocked brings debt up to now. b.mu is held.
func (b *byteBucket) refillLocked(now time.Time, rate float64) {
	if !b.at.IsZero() && now.After(b.at) {
		b.debt = max(0, b.debt-rate*now.Sub(b.at).Seconds())
	}
	b.at = now
}

// available is how many bytes may be spent now.
func (b *byteBucket) available(now time.Time, rate float64, burst int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now, rate)
	return max(0, int(float64(burst)-b.debt))
}

// spend takes n bytes from the bucket.
func (b *byteBucket) spend(now time.Time, rate float64, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now, rate)
	b.debt += float64(n)
}

// wait is how long until n bytes are available (n at most burst).
func (b *byteBucket) wait(now time.Time, rate float64, burst, n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now, rate)
	short := b.debt - float64(burst-n)
	if short <= 0 {
		return 0
	}
	return time.Duration(short / rate * float64(time.Second))
}

// valuesBudget is how many bytes the values of the answer to m may take
// for the whole answer to stay within Config.MaxAnswerBytes: the cap less
// the envelope (service and request_id, escaped as they go out).
func (srv *Server) valuesBudget(m *wire.Message) int {
	empty := wire.EncodeResponse(m.Service, m.RequestID, wire.CodeOK, "", nil)
	return srv.cfg.MaxAnswerBytes - (len(empty) - len(wire.EmptyObject))
}

// errAnswerTooLarge is the answer when not even an empty answer fits the cap.
func (srv *Server) errAnswerTooLarge() *wire.Error {
	return wire.Errorf(wire.CodeTooLarge, fmt.Sprintf("answer would be larger than %d bytes", srv.cfg.MaxAnswerBytes))
}
