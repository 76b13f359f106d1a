package hub

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
)

// topic is a kind of news about devices an admin can subscribe to.
type topic uint8

const (
	topicPresence topic = 1 << iota
	topicStatus
	topicEvent
	topicSummary
)

var topicNames = map[string]topic{"presence": topicPresence, "status": topicStatus, "event": topicEvent, "summary": topicSummary}

// defaultTopics are the topics of a subscription that names none.
const defaultTopics = topicPresence | topicStatus | topicEvent

// Limits on subscriptions, per session.
const (
	maxSelectorsPerRequest = 1000
	maxSelectorsPerSession = 10000
)

// subscription is what one session asked for under one selector.
type subscription struct {
	topics      topic
	minPriority int // for events
}

// subIndex maps selectors ("sn:R-1", "type:dog", "group:g1", "all") to the
// local sessions subscribed under them, so that news about a device is
// routed by looking up at most four selectors, never by a scan.
type subIndex struct {
	metrics   *metrics
	delivered prometheus.Counter // the hub's pushes-delivered counter
	dropped   prometheus.Counter // pushes to sessions that were closing or slow

	mu      sync.RWMutex
	sels    map[string]map[*Session]struct{} // Guarded by mu.
	summary map[*Session]struct{}            // sessions with the summary topic. Guarded by mu.
}

func newSubIndex(m *metrics) *subIndex {
	return &subIndex{
		metrics: m, delivered: m.pushesDelivered, dropped: m.pushesDropped.WithLabelValues("session_closed"),
		sels: make(map[string]map[*Session]struct{}), summary: make(map[*Session]struct{}),
	}
}

func (x *subIndex) summaryAdd(s *Session) {
	x.mu.Lock()
	x.summary[s] = struct{}{}
	x.mu.Unlock()
}

func (x *subIndex) summaryRemove(s *Session) {
	x.mu.Lock()
	delete(x.summary, s)
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

func (x *subIndex) add(sel string, s *Session) {
	x.mu.Lock()
	defer x.mu.Unlock()
	m := x.sels[sel]
	if m == nil {
		m = make(map[*Session]struct{}, 1)
		x.sels[sel] = m
	}
	m[s] = struct{}{}
}

func (x *subIndex) remove(sel string, s *Session) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if m := x.sels[sel]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(x.sels, sel)
		}
	}
}

// deliver pushes news about device sn (of typ and group) to every local
// session subscribed to it under any selector with topic t (and, for
// events, a min_priority at or below prio), that may see the device's
// group. The frame is encoded once.
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
		for s := range x.sels[sel] {
			if seen != nil {
				if seen[s] {
					continue
				}
				seen[s] = true
			}
			if !s.wants(sel, t, prio) {
				continue
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

// wants reports whether the session subscribed to topic t under sel, and
// for events whether prio reaches its min_priority.
func (s *Session) wants(sel string, t topic, prio int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[sel]
	return ok && sub.topics&t != 0 && (t != topicEvent || prio >= sub.minPriority)
}

type subscribeArgs struct {
	Devices     []string `json:"devices"`
	Types       []string `json:"types"`
	Groups      []string `json:"groups"`
	All         bool     `json:"all"`
	Topics      []string `json:"topics"`
	MinPriority *string  `json:"min_priority"`
}

// parse checks the args and returns the selectors and topics they name.
func (a *subscribeArgs) parse(srv *Server, id *Identity) ([]string, topic, int, *wire.Error) {
	n := len(a.Devices) + len(a.Types) + len(a.Groups)
	if n == 0 && !a.All {
		return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, "args: name devices, types, groups or all")
	}
	if n > maxSelectorsPerRequest {
		return nil, 0, 0, wire.Errorf(wire.CodeTooLarge, fmt.Sprintf("args: at most %d devices, types and groups per request", maxSelectorsPerRequest))
	}
	var sels []string
	for _, sn := range a.Devices {
		if !auth.ValidSerial(sn) {
			return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.devices: %q is not a valid serial number", wire.Clip(sn)))
		}
		if _, group, ok := srv.deviceAttrs(sn); ok && !auth.CanSee(id.Groups, group) {
			return nil, 0, 0, wire.Errorf(wire.CodeForbidden, "device "+sn+" is outside your groups")
		}
		sels = append(sels, "sn:"+sn)
	}
	for _, t := range a.Types {
		if !subjects.ValidToken(t) {
			return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.types: %q is not a valid type", wire.Clip(t)))
		}
		sels = append(sels, "type:"+t)
	}
	for _, g := range a.Groups {
		if !subjects.ValidToken(g) {
			return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.groups: %q is not a valid group", wire.Clip(g)))
		}
		if !auth.CanSee(id.Groups, g) {
			return nil, 0, 0, wire.Errorf(wire.CodeForbidden, "group "+g+" is outside your groups")
		}
		sels = append(sels, "group:"+g)
	}
	if a.All {
		sels = append(sels, "all")
	}
	topics := topic(0)
	for _, name := range a.Topics {
		t, ok := topicNames[name]
		if !ok {
			return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.topics: unknown topic %q (want presence, status, event or summary)", wire.Clip(name)))
		}
		topics |= t
	}
	switch {
	case a.Topics == nil:
		topics = defaultTopics
	case topics == 0:
		return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, "args.topics: name at least one topic")
	}
	minPriority := 0
	if a.MinPriority != nil {
		p, ok := priorities[*a.MinPriority]
		if !ok {
			return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, "args.min_priority: must be normal, high or emergency")
		}
		minPriority = p
	}
	return sels, topics, minPriority, nil
}

// priorities orders event priorities.
var priorities = map[string]int{"normal": 0, "high": 1, "emergency": 2}

// serveSubscribe adds subscriptions and answers with a snapshot of the
// devices they match.
func (srv *Server) serveSubscribe(s *Session, m *wire.Message) (any, *wire.Error) {
	var a subscribeArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	id := s.Identity()
	sels, topics, minPriority, werr := a.parse(srv, id)
	if werr != nil {
		return nil, werr
	}
	s.mu.Lock()
	if s.subs == nil {
		s.subs = make(map[string]subscription)
	}
	added := 0
	for _, sel := range sels {
		if _, ok := s.subs[sel]; !ok {
			added++
		}
	}
	if len(s.subs)+added > maxSelectorsPerSession {
		s.mu.Unlock()
		return nil, wire.Errorf(wire.CodeTooLarge, fmt.Sprintf("a session may hold at most %d subscriptions", maxSelectorsPerSession))
	}
	for _, sel := range sels {
		sub := s.subs[sel]
		sub.topics |= topics
		if topics&topicEvent != 0 {
			sub.minPriority = minPriority // the latest subscription decides
		}
		s.subs[sel] = sub
	}
	if topics&topicSummary != 0 {
		srv.subs.summaryAdd(s)
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, wire.Errorf(wire.CodeConflict, "session closed")
	}
	for _, sel := range sels {
		srv.subs.add(sel, s)
	}
	want := make(map[string]bool, len(sels))
	for _, sel := range sels {
		want[sel] = true
	}
	devices := srv.presence.devices(func(sn, typ, group string, _ bool) bool {
		if !auth.CanSee(id.Groups, group) {
			return false
		}
		return want["all"] || want["sn:"+sn] || want["type:"+typ] || want["group:"+group]
	})
	return map[string]any{"devices": devices}, nil
}

// serveUnsubscribe removes exactly the topics the args name from the
// selectors they name.
func (srv *Server) serveUnsubscribe(s *Session, m *wire.Message) (any, *wire.Error) {
	var a subscribeArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	// Unsubscribing needs no group check: it can only remove.
	all := &Identity{Groups: []string{"*"}}
	sels, topics, _, werr := a.parse(srv, all)
	if werr != nil {
		return nil, werr
	}
	var drop []string
	s.mu.Lock()
	summary := false
	defer func() {
		if !summary {
			srv.subs.summaryRemove(s)
		}
	}()
	for _, sel := range sels {
		sub, ok := s.subs[sel]
		if !ok {
			continue
		}
		sub.topics &^= topics
		if sub.topics == 0 {
			delete(s.subs, sel)
			drop = append(drop, sel)
		} else {
			s.subs[sel] = sub
		}
	}
	n := len(s.subs)
	for _, sub := range s.subs {
		summary = summary || sub.topics&topicSummary != 0
	}
	s.mu.Unlock()
	for _, sel := range drop {
		srv.subs.remove(sel, s)
	}
	return map[string]int{"subscriptions": n}, nil
}

// dropSubscriptions removes a closed session from the index.
func (srv *Server) dropSubscriptions(s *Session) {
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	for sel := range subs {
		srv.subs.remove(sel, s)
	}
	srv.subs.summaryRemove(s)
}

type devicesArgs struct {
	Type   *string `json:"type"`
	Group  *string `json:"group"`
	Online *bool   `json:"online"`
}

// serveDevices lists the known devices the caller may see, from this node's
// view of presence (no scan of the buckets).
func (srv *Server) serveDevices(s *Session, m *wire.Message) (any, *wire.Error) {
	var a devicesArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	id := s.Identity()
	devices := srv.presence.devices(func(_, typ, group string, online bool) bool {
		return auth.CanSee(id.Groups, group) &&
			(a.Type == nil || *a.Type == typ) &&
			(a.Group == nil || *a.Group == group) &&
			(a.Online == nil || *a.Online == online)
	})
	return map[string]any{"devices": devices}, nil
}

// deviceAttrs is a device's type and group: from the registry, else from
// presence, else unknown.
func (srv *Server) deviceAttrs(sn string) (typ, group string, ok bool) {
	if d, ok := srv.registry.get(sn); ok {
		return d.Type, d.Group, true
	}
	return srv.presence.known(sn)
}
