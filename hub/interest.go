package hub

import (
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/nats-io/nats.go"
)

// interest is one subject that local sessions want: one NATS subscription,
// shared by its members, dropped when the last member leaves.
type interest struct {
	subject string
	sub     *nats.Subscription

	mu      sync.RWMutex
	members memberSet // Guarded by mu.
}

// registry maps subjects to interests and delivers arriving messages to
// dispatch shards. A subject always maps to the same shard, and a shard is
// one goroutine, so messages on one subject keep their order.
type registry struct {
	srv    *Server
	shards []chan *nats.Msg
	wg     sync.WaitGroup

	mu        sync.RWMutex
	interests map[string]*interest // Guarded by mu.
	stopped   bool                 // Guarded by mu.
}

func newRegistry(srv *Server) *registry {
	r := &registry{srv: srv, interests: make(map[string]*interest)}
	r.shards = make([]chan *nats.Msg, srv.cfg.DispatchShards)
	for i := range r.shards {
		r.shards[i] = make(chan *nats.Msg, srv.cfg.DispatchQueue)
	}
	return r
}

func (r *registry) start() {
	for _, ch := range r.shards {
		r.wg.Add(1)
		go func(ch chan *nats.Msg) {
			defer r.wg.Done()
			for m := range ch {
				r.srv.dispatch(m)
			}
		}(ch)
	}
}

// stop unsubscribes everything and ends the dispatch goroutines.
func (r *registry) stop() {
	r.mu.Lock()
	r.stopped = true
	for subj, in := range r.interests {
		if in.sub != nil {
			_ = in.sub.Unsubscribe()
		}
		delete(r.interests, subj)
	}
	r.mu.Unlock()
	// Subscriptions are gone, so nothing sends on the shards any more.
	for _, ch := range r.shards {
		close(ch)
	}
	r.wg.Wait()
}

func (r *registry) shard(subject string) chan *nats.Msg {
	h := fnv.New32a()
	_, _ = h.Write([]byte(subject))
	return r.shards[h.Sum32()%uint32(len(r.shards))]
}

// join adds s to the interest in subject, subscribing when it is the
// first; created reports that a new subscription was made. It returns the
// interest's own copy of the subject, which the session keeps instead of
// its own (one string per interest, not one per member).
func (r *registry) join(subject string, s *Session) (canonical string, created bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return "", false, fmt.Errorf("hub: subscribe %s: %w", subject, ErrClosed)
	}
	in, ok := r.interests[subject]
	if !ok {
		sub, err := r.srv.nc.ChanSubscribe(subject, r.shard(subject))
		if err != nil {
			return "", false, fmt.Errorf("hub: subscribe %s: %w", subject, err)
		}
		in = &interest{subject: subject, sub: sub}
		r.interests[subject] = in
		r.srv.metrics.interests.Inc()
		created = true
	}
	in.mu.Lock()
	in.members.add(s)
	in.mu.Unlock()
	return in.subject, created, nil
}

// leave removes s from the interest in subject, unsubscribing when it was
// the last member.
func (r *registry) leave(subject string, s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in, ok := r.interests[subject]
	if !ok {
		return
	}
	in.mu.Lock()
	in.members.remove(s)
	empty := in.members.len() == 0
	in.mu.Unlock()
	if empty {
		_ = in.sub.Unsubscribe()
		delete(r.interests, subject)
		r.srv.metrics.interests.Dec()
	}
}

func (r *registry) lookup(subject string) *interest {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.interests[subject]
}

// size is the member count of an interest, 0 when absent.
func (r *registry) size(subject string) int {
	in := r.lookup(subject)
	if in == nil {
		return 0
	}
	in.mu.RLock()
	defer in.mu.RUnlock()
	return in.members.len()
}

// members copies the members of an interest. For small interests only
// (one device, one user); fan-out iterates in place with each.
func (r *registry) members(subject string) []*Session {
	in := r.lookup(subject)
	if in == nil {
		return nil
	}
	in.mu.RLock()
	defer in.mu.RUnlock()
	out := make([]*Session, 0, in.members.len())
	in.members.each(func(s *Session) { out = append(out, s) })
	return out
}

// each calls fn for every member of the interest in subject, under the
// interest's read lock: fn must not block or join or leave interests.
func (r *registry) each(subject string, fn func(*Session)) {
	in := r.lookup(subject)
	if in == nil {
		return
	}
	in.mu.RLock()
	defer in.mu.RUnlock()
	in.members.each(fn)
}
