package hub

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// interest is one subject that local sessions want: one NATS subscription,
// shared by its members, dropped when the last member leaves.
type interest struct {
	subject string
	route   route // what subject is for; zero for the orphans
	sub     *nats.Subscription
	shard   *shard

	// inline: a push subject with at most smallSet members, which the
	// mover may dispatch itself (see move). Set under mu with members.
	inline atomic.Bool

	mu      sync.Mutex
	members memberSet  // Guarded by mu.
	snap    []*Session // members as of the last change; nil when stale. Guarded by mu.

	// The interest's own dispatch backlog: messages that arrived and wait
	// for the shard's worker. Bounded, so that a flood on one subject is
	// dropped (and counted) there and never crowds out another subject.
	// Guarded by shard.mu.
	queue     []*nats.Msg
	scheduled bool // on the shard's run queue, or being dispatched
	dropped   int  // messages nats.go dropped that are already counted
}

// copyMembers appends the members to buf and returns it. Large sets are
// copied once per change and shared by every walk after it (copy on
// write), so a broadcast holds no lock while it sends, and a join or leave
// never waits for a broadcast.
func (in *interest) copyMembers(buf []*Session) []*Session {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.members.many == nil {
		return append(buf, in.members.few...)
	}
	if in.snap == nil {
		in.snap = make([]*Session, 0, len(in.members.many))
		in.members.each(func(s *Session) { in.snap = append(in.snap, s) })
	}
	if len(buf) == 0 {
		return in.snap // immutable: a change makes a new one
	}
	return append(buf, in.snap...)
}

// setInline says whether the mover may dispatch the interest itself: a
// push subject with few members. Called with mu held.
func (in *interest) setInline() {
	in.inline.Store(in.route.kind == routePush && in.members.len() <= smallSet)
}

// size is the member count.
func (in *interest) size() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.members.len()
}

// registry maps subjects to interests and dispatches what arrives on them.
//
// Each interest's subscription delivers into the channel of one of a few
// shards (a subject always to the same shard). A shard has two goroutines:
// its mover, which files each message in its interest's bounded backlog,
// so that nats.go's channel never fills; and its worker, which dispatches
// the backlogs round robin, a batch of each at a time. A subject is
// dispatched by one goroutine at a time, in order; a flooded subject fills
// only its own backlog, and what does not fit is dropped and counted
// (reason "backlog"), while every other subject keeps flowing.
//
// One shortcut saves the worker's wake-up on the common path: when nothing
// else waits in the channel, a message of a small push interest (a device,
// a user, a small group) with nothing in its backlog and not in the
// worker's hands is dispatched by the mover itself (see move).
type registry struct {
	srv    *Server
	shards []*shard
	wg     sync.WaitGroup
	// watch is the interest in device records (watch.go): started and
	// stopped with the registry.
	watch *watchSet

	// The interests, split by subject hash into stripes, each with its
	// own lock: joins and leaves of different subjects (a connect storm
	// joins thousands) do not wait for each other's subscribe calls.
	stripes [interestStripes]stripe
}

// interestStripes is how many stripes the registry's interests are split
// into. With a few shared subjects that every session joins (all, the
// role, its type and group) and two of its own (device push and
// commands), a new subscription rarely shares a stripe with a shared
// subject whose joins would then wait for it.
const interestStripes = 256

// stripe is one part of the registry's interests: the subjects whose hash
// falls in it.
type stripe struct {
	mu        sync.RWMutex
	interests map[string]*interest // Guarded by mu.
	stopped   bool                 // Guarded by mu.
}

// shard is one dispatch lane; see registry.
type shard struct {
	in chan *nats.Msg // what nats.go delivers

	mu      sync.Mutex
	wake    *sync.Cond
	subs    map[*nats.Subscription]*interest // the shard's interests. Guarded by mu.
	runq    []*interest                      // interests with a backlog, in arrival order. Guarded by mu.
	bytes   int                              // payload bytes in every backlog of the shard. Guarded by mu.
	orphans *interest                        // backlog for messages whose interest is gone
	done    bool                             // the mover has ended. Guarded by mu.
	inlined atomic.Int64                     // messages the mover dispatched itself
}

// dispatchBatch is how many messages of one interest a worker dispatches
// before it turns to the next interest with a backlog.
const dispatchBatch = 32

func newRegistry(srv *Server) *registry {
	r := &registry{srv: srv, watch: newWatchSet(srv)}
	for i := range r.stripes {
		r.stripes[i].interests = make(map[string]*interest)
	}
	r.shards = make([]*shard, srv.cfg.DispatchShards)
	for i := range r.shards {
		sh := &shard{in: make(chan *nats.Msg, srv.cfg.DispatchQueue), subs: make(map[*nats.Subscription]*interest)}
		sh.wake = sync.NewCond(&sh.mu)
		sh.orphans = &interest{shard: sh}
		r.shards[i] = sh
	}
	return r
}

func (r *registry) start() {
	r.watch.start()
	for _, sh := range r.shards {
		r.wg.Add(2)
		go func() { defer r.wg.Done(); r.move(sh) }()
		go func() { defer r.wg.Done(); r.work(sh) }()
	}
}

// move files each message nats.go delivers in its interest's backlog. It
// does nothing that can block for long, and takes what has arrived in
// batches under one lock: it must stay faster than nats.go's reader, or
// nats.go drops messages of whichever subject (counted as "overflow"). A
// message that does not fit its backlog is dropped and counted here.
//
// When the channel holds nothing more, the mover dispatches a message of
// a small push interest itself if that interest is idle (not scheduled,
// so its backlog is empty and the worker is not dispatching it): the
// message would otherwise wake the worker only to be its sole work. Order
// per subject holds: the mover is the only goroutine that files, so while
// it dispatches nothing joins that backlog, and the next message of the
// subject is filed or dispatched after this one. The cost of being inline
// is bounded: at most smallSet non-blocking sends (Transport.Send never
// blocks), no command (a command's delivery does more), no broadcast; and
// whatever arrives meanwhile waits in the channel and is then filed in
// batches as before, so a flood is filed, not dispatched, by the mover.
func (r *registry) move(sh *shard) {
	var drops []string
	for m := range sh.in {
		if len(sh.in) == 0 && r.dispatchInline(sh, m) {
			continue
		}
		sh.mu.Lock()
		wake := r.file(sh, m, &drops)
	more:
		for range moveBatch {
			select {
			case m, ok := <-sh.in:
				if !ok {
					break more
				}
				wake = r.file(sh, m, &drops) || wake
			default:
				break more
			}
		}
		if wake {
			sh.wake.Signal()
		}
		sh.mu.Unlock()
		for _, subj := range drops {
			r.srv.dropPush(dropBacklog, subj, errBacklogFull)
		}
		drops = drops[:0]
	}
	sh.mu.Lock()
	sh.done = true
	sh.wake.Signal()
	sh.mu.Unlock()
}

// dispatchInline dispatches m on the mover when its interest is small and
// idle (see move), and reports whether it did.
func (r *registry) dispatchInline(sh *shard, m *nats.Msg) bool {
	sh.mu.Lock()
	in := sh.subs[m.Sub]
	idle := in != nil && !in.scheduled && in.inline.Load()
	sh.mu.Unlock()
	if !idle {
		return false
	}
	sh.inlined.Add(1)
	r.srv.dispatchRoute(&in.route, m)
	return true
}

// moveBatch is how many waiting messages the mover files under one lock.
const moveBatch = 256

// file adds m to its interest's backlog, or records it in drops when it
// does not fit; it reports whether the interest was newly scheduled.
// Called with sh.mu held.
func (r *registry) file(sh *shard, m *nats.Msg, drops *[]string) bool {
	in := sh.subs[m.Sub]
	if in == nil {
		in = sh.orphans // unsubscribed meanwhile: dispatch answers for nobody
	}
	if len(in.queue) >= r.srv.cfg.DispatchBacklog || sh.bytes+len(m.Data) > r.srv.cfg.DispatchBytes {
		*drops = append(*drops, m.Subject)
		return false
	}
	in.queue = append(in.queue, m)
	sh.bytes += len(m.Data)
	if in.scheduled {
		return false
	}
	in.scheduled = true
	sh.runq = append(sh.runq, in)
	return true
}

var errBacklogFull = errors.New("dispatch backlog full")

// work dispatches the shard's backlogs until the mover has ended and every
// backlog is empty.
func (r *registry) work(sh *shard) {
	var batch []*nats.Msg
	for {
		sh.mu.Lock()
		for len(sh.runq) == 0 && !sh.done {
			sh.wake.Wait()
		}
		if len(sh.runq) == 0 {
			sh.mu.Unlock()
			return
		}
		in := sh.runq[0]
		sh.runq[0] = nil
		sh.runq = sh.runq[1:]
		n := min(len(in.queue), dispatchBatch)
		batch = append(batch[:0], in.queue[:n]...)
		clear(in.queue[:n])
		in.queue = in.queue[n:]
		if len(in.queue) == 0 {
			in.queue = nil
		}
		for _, m := range batch {
			sh.bytes -= len(m.Data)
		}
		sh.mu.Unlock()

		switch {
		case in != sh.orphans && in.route.kind == routePush && len(batch) > 1:
			r.srv.deliverPushes(in.route.target, batch)
		default:
			for _, m := range batch {
				if in == sh.orphans {
					r.srv.dispatch(m)
				} else {
					r.srv.dispatchRoute(&in.route, m)
				}
			}
		}
		clear(batch)

		// Only now may the interest be scheduled again: one worker
		// dispatches a subject at a time, in order.
		sh.mu.Lock()
		if len(in.queue) > 0 {
			sh.runq = append(sh.runq, in)
		} else {
			in.scheduled = false
		}
		sh.mu.Unlock()
	}
}

// stop unsubscribes everything, dispatches what is already in the
// backlogs and ends the dispatch goroutines.
func (r *registry) stop() {
	var subs []*interest
	for i := range r.stripes {
		st := &r.stripes[i]
		st.mu.Lock()
		if st.stopped {
			st.mu.Unlock()
			return // every stripe is stopped together, by the first stop
		}
		st.stopped = true
		for subj, in := range st.interests {
			subs = append(subs, in)
			delete(st.interests, subj)
		}
		st.mu.Unlock()
	}
	for _, in := range subs {
		r.unsubscribe(in)
	}
	// Subscriptions are gone, so nats.go sends nothing more on the shards.
	for _, sh := range r.shards {
		close(sh.in)
	}
	r.wg.Wait()
	r.watch.stop()
}

// subjectHash is the 32-bit FNV-1a hash of subject, which picks both its
// stripe and its shard.
func subjectHash(subject string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(subject); i++ {
		h ^= uint32(subject[i])
		h *= 16777619
	}
	return h
}

// stripe is the stripe of a subject whose hash is h.
func (r *registry) stripe(h uint32) *stripe { return &r.stripes[h%interestStripes] }

// shard is the shard of subject.
func (r *registry) shard(subject string) *shard { return r.shardOf(subjectHash(subject)) }

// shardOf is the shard of a subject whose hash is h.
func (r *registry) shardOf(h uint32) *shard { return r.shards[h%uint32(len(r.shards))] }

// join adds s to the interest in subject, subscribing when it is the
// first; created reports that a new subscription was made. It returns the
// interest's own copy of the subject, which the session keeps instead of
// its own (one string per interest, not one per member).
func (r *registry) join(subject string, s *Session) (canonical string, created bool, err error) {
	h := subjectHash(subject)
	st := r.stripe(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped {
		return "", false, fmt.Errorf("hub: subscribe %s: %w", subject, ErrClosed)
	}
	in, ok := st.interests[subject]
	if !ok {
		// Subscribed under the shard's lock: the mover files the first
		// message only once the shard knows its interest, so no message of
		// the subject goes to the orphans' backlog ahead of the others.
		sh := r.shardOf(h)
		sh.mu.Lock()
		sub, err := r.srv.nc.ChanSubscribe(subject, sh.in)
		if err != nil {
			sh.mu.Unlock()
			return "", false, fmt.Errorf("hub: subscribe %s: %w", subject, err)
		}
		in = &interest{subject: subject, route: routeOf(subject), sub: sub, shard: sh}
		sh.subs[sub] = in
		sh.mu.Unlock()
		st.interests[subject] = in
		r.srv.metrics.interests.Inc()
		created = true
	}
	in.mu.Lock()
	in.members.add(s)
	in.snap = nil
	in.setInline()
	in.mu.Unlock()
	return in.subject, created, nil
}

// leave removes s from the interest in subject, unsubscribing when it was
// the last member.
func (r *registry) leave(subject string, s *Session) {
	st := r.stripe(subjectHash(subject))
	st.mu.Lock()
	in, ok := st.interests[subject]
	if !ok {
		st.mu.Unlock()
		return
	}
	in.mu.Lock()
	in.members.remove(s)
	in.snap = nil
	in.setInline()
	empty := in.members.len() == 0
	in.mu.Unlock()
	if empty {
		// Unsubscribed under the stripe's lock: a join that comes next
		// subscribes after this, so no message reaches both subscriptions.
		delete(st.interests, subject)
		r.srv.metrics.interests.Dec()
		r.unsubscribe(in)
	}
	st.mu.Unlock()
}

// unsubscribe ends an interest's subscription, counting what nats.go
// dropped for it that was not counted yet.
func (r *registry) unsubscribe(in *interest) {
	r.countDropped(in)
	_ = in.sub.Unsubscribe()
	in.shard.mu.Lock()
	delete(in.shard.subs, in.sub)
	in.shard.mu.Unlock()
}

// countDropped counts the messages nats.go dropped for the interest since
// the last count: its channel was full (the mover fell behind).
func (r *registry) countDropped(in *interest) {
	n, err := in.sub.Dropped()
	if err != nil {
		return
	}
	in.shard.mu.Lock()
	delta := n - in.dropped
	in.dropped = n
	in.shard.mu.Unlock()
	if delta > 0 {
		r.srv.metrics.pushesDropped.WithLabelValues(dropOverflow).Add(float64(delta))
		r.srv.warnLimited("dispatch overflow: messages dropped before dispatch", "subject", in.subject, "dropped", delta)
	}
}

// onSlowConsumer is told by nats.go that a subscription dropped messages.
func (r *registry) onSlowConsumer(sub *nats.Subscription) {
	if sub == nil || r.watch.onSlowConsumer(sub) {
		return
	}
	if in := r.lookup(sub.Subject); in != nil && in.sub == sub {
		r.countDropped(in)
	}
}

func (r *registry) lookup(subject string) *interest {
	st := r.stripe(subjectHash(subject))
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.interests[subject]
}

// size is the member count of an interest, 0 when absent.
func (r *registry) size(subject string) int {
	in := r.lookup(subject)
	if in == nil {
		return 0
	}
	return in.size()
}

// members copies the members of an interest into buf (which may be nil)
// and returns it; nil when the interest is absent. The result may be
// shared: callers must not modify it. No lock is held on return, so the
// caller may send to the members.
func (r *registry) members(subject string, buf []*Session) []*Session {
	in := r.lookup(subject)
	if in == nil {
		return buf
	}
	return in.copyMembers(buf)
}
