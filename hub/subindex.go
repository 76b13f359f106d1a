package hub

import (
	"sync"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// subIndex maps selectors ("sn:R-1", "type:dog", "group:g1", "all") to the
// local sessions subscribed under them, with what each asked for, so that
// news about a device is routed by looking up at most four selectors, never
// by a scan.
//
// The index holds its own copy of every subscription: deliver decides who
// gets a push from the index alone and takes no session lock. Writers hold
// the session's Session.mu while they update the session's subscriptions
// and the index together (lock order: Session.mu, then subIndex.mu; see
// locksordering.txt), so the two never disagree.
type subIndex struct {
	metrics   *metrics
	delivered prometheus.Counter // the hub's pushes-delivered counter
	dropped   prometheus.Counter // pushes to sessions that were closing or slow

	mu      sync.RWMutex
	sels    map[string]map[*Session]subscription // Guarded by mu.
	summary map[*Session]struct{}                // sessions with the summary topic. Guarded by mu.
}

func newSubIndex(m *metrics) *subIndex {
	return &subIndex{
		metrics: m, delivered: m.pushesDelivered, dropped: m.pushesDropped.WithLabelValues("session_closed"),
		sels: make(map[string]map[*Session]subscription), summary: make(map[*Session]struct{}),
	}
}

// setSummary records whether s gets /push/summary.
func (x *subIndex) setSummary(s *Session, on bool) {
	x.mu.Lock()
	if on {
		x.summary[s] = struct{}{}
	} else {
		delete(x.summary, s)
	}
	x.mu.Unlock()
}

// summarySessions copies the sessions that get /push/summary.
func (x *subIndex) summarySessions() []*Session {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]*Session, 0, len(x.summary))
	for s := range x.summary {
		out = append(out, s)
	}
	return out
}

// set records what s holds under sel, removing it when sub covers no topic.
func (x *subIndex) set(sel string, s *Session, sub subscription) {
	x.mu.Lock()
	defer x.mu.Unlock()
	m := x.sels[sel]
	if sub.topics == 0 {
		if m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(x.sels, sel)
			}
		}
		return
	}
	if m == nil {
		m = make(map[*Session]subscription, 1)
		x.sels[sel] = m
	}
	m[s] = sub
}

// deliver pushes news about device sn (of typ and group) to every local
// session subscribed to it under any selector with topic t (and, for
// events, a min_priority at or below prio), that may see the device's
// group. A session subscribed under several matching selectors gets it
// once. The frame is encoded once, and sent with no lock held.
func (x *subIndex) deliver(t topic, prio int, sn, typ, group, service, id string, values []byte) {
	sels := [4]string{"sn:" + sn, "type:" + typ, "group:" + group, "all"}
	x.mu.RLock()
	var targets []*Session
	var seen map[*Session]bool
	hits := 0
	for _, sel := range sels {
		if len(x.sels[sel]) > 0 {
			hits++
		}
	}
	if hits > 1 {
		seen = make(map[*Session]bool)
	}
	for _, sel := range sels {
		for s, sub := range x.sels[sel] {
			if !sub.wants(t, prio) {
				continue
			}
			if seen != nil {
				if seen[s] {
					continue
				}
				seen[s] = true
			}
			if id := s.Identity(); id == nil || !auth.CanSee(id.Groups, group) {
				continue
			}
			targets = append(targets, s)
		}
	}
	x.mu.RUnlock()
	if len(targets) == 0 {
		return
	}
	frame, err := wire.EncodePush(service, id, values)
	if err != nil {
		return
	}
	delivered := 0
	for _, s := range targets {
		if s.send(frame) {
			delivered++
		} else {
			x.dropped.Inc()
		}
	}
	x.delivered.Add(float64(delivered))
	x.metrics.pushedOut(service, delivered)
}
