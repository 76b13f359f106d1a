package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

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
	// The groups of the devices named, up to the first invalid serial
	// number, in one batched read rather than a round trip or two each.
	valid := len(a.Devices)
	for i, sn := range a.Devices {
		if !auth.ValidSerial(sn) {
			valid = i
			break
		}
	}
	groups := srv.deviceGroups(a.Devices[:valid])
	for _, sn := range a.Devices {
		if !auth.ValidSerial(sn) {
			return nil, 0, 0, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.devices: %q is not a valid serial number", wire.Clip(sn)))
		}
		if group, ok := groups[sn]; ok && !auth.CanSee(id.Groups, group) {
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
// devices they match, one page of them (listing.go).
func (srv *Server) serveSubscribe(s *Session, m *wire.Message) (any, *wire.Error) {
	var a subscribeArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	limit, werr := snapshotLimit(m.Args)
	if werr != nil {
		return nil, werr
	}
	id := s.Identity()
	sels, topics, minPriority, werr := a.parse(srv, id)
	if werr != nil {
		return nil, werr
	}
	watched, werr := srv.addSubscriptions(s, sels, topics, minPriority)
	if werr != nil {
		return nil, werr
	}
	if watched {
		srv.flushWatch()
	}
	return srv.snapshot(s, m, sels, limit)
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
	n := srv.removeSubscriptions(s, sels, topics)
	return map[string]int{"subscriptions": n}, nil
}

// addSubscriptions adds topics (and, for events, minPriority: the latest
// subscription decides) under each selector, in the session, in the index
// and in the node's watch subscriptions together. Session.mu is held
// across them, then subIndex.mu or watchSet.mu, never the other way round:
// deliver takes no session lock. watched reports that the session now
// watches a record topic under a selector it did not before: the caller
// flushes the connection, so that the server has the subscription before
// the answer goes out.
func (srv *Server) addSubscriptions(s *Session, sels []string, topics topic, minPriority int) (watched bool, werr *wire.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, wire.Errorf(wire.CodeConflict, "session closed")
	}
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
		return false, wire.Errorf(wire.CodeTooLarge, fmt.Sprintf("a session may hold at most %d subscriptions", maxSelectorsPerSession))
	}
	// The watch subscriptions first: when one cannot be made, the request
	// changes nothing.
	var refs []watchKey
	var seen map[string]bool // a request may name a selector twice
	for _, sel := range sels {
		if s.subs[sel].topics&topics == topics {
			continue // the session watches all of it already
		}
		if seen == nil {
			seen = make(map[string]bool, len(sels))
		}
		if seen[sel] {
			continue
		}
		seen[sel] = true
		for _, wt := range watchTopics {
			if topics&wt.t == 0 || s.subs[sel].topics&wt.t != 0 {
				continue
			}
			for _, wsel := range watchSelectors(s.Identity(), sel) {
				if err := srv.interest.watch.ref(wsel, wt.t); err != nil {
					for _, k := range refs {
						srv.interest.watch.unref(k.sel, k.topic)
					}
					srv.log.Warn("subscribe: no watch subscription", "err", err)
					return false, wire.Errorf(wire.CodeUnavailable, "subscriptions unavailable, try again")
				}
				refs = append(refs, watchKey{wsel, wt.t})
			}
		}
	}
	for _, sel := range sels {
		sub := s.subs[sel]
		sub.topics |= topics
		if topics&topicEvent != 0 {
			sub.minPriority = minPriority
		}
		s.subs[sel] = sub
		srv.subs.set(sel, s, sub)
	}
	if topics&topicSummary != 0 {
		srv.subs.setSummary(s, true)
	}
	return len(refs) > 0, nil
}

// unwatch drops the session's watch subscriptions of the record topics in
// gone under sel: the same watch selectors addSubscriptions took, as the
// session's identity never changes. Called with s.mu held.
func (srv *Server) unwatch(s *Session, sel string, gone topic) {
	for _, wt := range watchTopics {
		if gone&wt.t == 0 {
			continue
		}
		for _, wsel := range watchSelectors(s.Identity(), sel) {
			srv.interest.watch.unref(wsel, wt.t)
		}
	}
}

// flushWatch waits, within storeTimeout, for the server to have the
// subscriptions made so far, so that every record stored after a
// subscribe is answered reaches the session. A bus that is down gets the
// subscriptions when it is back; the answer does not wait for that.
func (srv *Server) flushWatch() {
	if !srv.nc.IsConnected() {
		return // nats.go makes the subscriptions again on reconnecting
	}
	ctx, cancel := context.WithTimeout(srv.runCtx, storeTimeout)
	defer cancel()
	if err := srv.nc.FlushWithContext(ctx); err != nil {
		srv.warnLimited("subscribe: flush", "err", err)
	}
}

// removeSubscriptions removes topics from each selector, in the session and
// in the index together, and returns how many selectors the session still
// holds.
func (srv *Server) removeSubscriptions(s *Session, sels []string, topics topic) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sel := range sels {
		sub, ok := s.subs[sel]
		if !ok {
			continue
		}
		srv.unwatch(s, sel, sub.topics&topics)
		sub.topics &^= topics
		if sub.topics == 0 {
			delete(s.subs, sel)
		} else {
			s.subs[sel] = sub
		}
		srv.subs.set(sel, s, sub)
	}
	summary := false
	for _, sub := range s.subs {
		summary = summary || sub.topics&topicSummary != 0
	}
	srv.subs.setSummary(s, summary)
	return len(s.subs)
}

// dropSubscriptions removes a closed session from the index.
func (srv *Server) dropSubscriptions(s *Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sel, sub := range s.subs {
		srv.unwatch(s, sel, sub.topics)
		srv.subs.set(sel, s, subscription{})
	}
	s.subs = nil
	srv.subs.setSummary(s, false)
}

// deviceGroups are the groups of the known devices among sns, as
// deviceAttrs has them (the registry, else the presence entry, else the
// last presence record), the ones not registered read from JetStream in
// batched direct gets sent together. A device whose group cannot be read
// is left out: unknown, as deviceAttrs answers then.
func (srv *Server) deviceGroups(sns []string) map[string]string {
	out := make(map[string]string, len(sns))
	var rest []string
	for _, sn := range sns {
		if d, ok := srv.registry.get(sn); ok {
			out[sn] = d.Group
		} else {
			rest = append(rest, sn)
		}
	}
	if len(rest) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(srv.runCtx, storeTimeout)
	defer cancel()
	for batch := range slices.Chunk(rest, maxMultiLast) {
		var names, entrySubjs, recSubjs []string
		for _, sn := range batch {
			ks, err1 := subjects.KVKey(BucketPresence, sn)
			rs, err2 := subjects.Presence(sn)
			if err1 != nil || err2 != nil {
				continue
			}
			names, entrySubjs, recSubjs = append(names, sn), append(entrySubjs, ks), append(recSubjs, rs)
		}
		got, err := srv.lastMessages(ctx, []lastOf{{"KV_" + BucketPresence, entrySubjs}, {StreamPresence, recSubjs}})
		if err != nil {
			srv.warnLimited("device groups not read", "err", err)
			return out
		}
		for i := range entrySubjs {
			var v struct {
				Group string `json:"group"`
			}
			if b, ok := got[0][entrySubjs[i]]; ok && json.Unmarshal(b, &v) == nil {
				out[names[i]] = v.Group
			} else if b, ok := got[1][recSubjs[i]]; ok && json.Unmarshal(b, &v) == nil {
				out[names[i]] = v.Group
			}
		}
	}
	return out
}

// deviceAttrs is a device's type and group: from the registry, else from
// presence, else unknown.
func (srv *Server) deviceAttrs(sn string) (typ, group string, ok bool) {
	if d, ok := srv.registry.get(sn); ok {
		return d.Type, d.Group, true
	}
	return srv.presence.known(sn)
}
