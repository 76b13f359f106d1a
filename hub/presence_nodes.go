package hub

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// onNode follows hub_nodes. A node whose entry goes away, removed at its
// shutdown or expired after its death, is lost: its devices go offline
// after the grace, counted from now, when it is found lost. Counted from
// its last refresh instead, the grace would be cut short by up to the
// node TTL, and a device that needs most of its grace to come back
// elsewhere would be reported offline; counted from now, node_lost comes
// at most node TTL + grace after the last refresh.
func (p *presence) onNode(e jetstream.KeyValueEntry, live bool) {
	id := e.Key()
	if e.Operation() == jetstream.KeyValuePut {
		var ne NodeEntry
		_ = json.Unmarshal(e.Value(), &ne)
		p.mu.Lock()
		p.nodes[id] = nodeView{since: ne.Since}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	delete(p.nodes, id)
	p.mu.Unlock()
	if !live || id == p.srv.cfg.NodeID {
		return
	}
	p.srv.log.Warn("node lost", "lost", id, "expired", e.Operation() == jetstream.KeyValuePurge)
	p.afterDeadline(p.srv.cfg.Now().Add(p.srv.cfg.OfflineGrace), func() { p.nodeLost(id) })
}

// afterDeadline runs f at deadline (at once if it has passed) on a
// goroutine that Shutdown waits for, unless the hub stops first.
func (p *presence) afterDeadline(deadline time.Time, f func()) {
	d := max(deadline.Sub(p.srv.cfg.Now()), 0)
	p.srv.goTask(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			f()
		case <-p.srv.runCtx.Done():
		}
	})
}

// nodeLost reports offline every device whose entry names a node that is
// no longer live, if this node is the coordinator (smallest live id).
func (p *presence) nodeLost(lost string) {
	p.mu.Lock()
	if p.stopped || !p.isCoordinatorLocked() {
		p.mu.Unlock()
		return
	}
	if _, back := p.nodes[lost]; back {
		p.mu.Unlock()
		return
	}
	type victim struct{ sn, session string }
	var victims []victim
	for sn, v := range p.view {
		if v.entry != nil && v.entry.Node == lost {
			victims = append(victims, victim{sn, v.entry.Session})
		}
	}
	p.mu.Unlock()
	for _, v := range victims {
		p.expire(v.sn, v.session, ReasonNodeLost)
	}
}

func (p *presence) isCoordinatorLocked() bool {
	me := p.srv.cfg.NodeID
	for id := range p.nodes {
		if id < me {
			return false
		}
	}
	return true
}

// reconcile, at start, schedules the entries left by nodes that are not
// live, including this node's own previous run: they go offline after the
// grace unless their devices come back.
func (p *presence) reconcile() {
	p.mu.Lock()
	lost := make(map[string]bool)
	for _, v := range p.view {
		if v.entry == nil {
			continue
		}
		_, live := p.nodes[v.entry.Node]
		if !live || (v.entry.Node == p.srv.cfg.NodeID && v.entry.Since < p.started.UnixMilli()) {
			lost[v.entry.Node] = true
		}
	}
	p.mu.Unlock()
	deadline := p.srv.cfg.Now().Add(p.srv.cfg.OfflineGrace)
	for id := range lost {
		if id == p.srv.cfg.NodeID {
			p.afterDeadline(deadline, p.expireStaleOwn)
			continue
		}
		p.afterDeadline(deadline, func() { p.nodeLost(id) })
	}
}

// expireStaleOwn reports offline the devices this node held before it
// restarted, unless they came back.
func (p *presence) expireStaleOwn() {
	p.mu.Lock()
	type victim struct{ sn, session string }
	var victims []victim
	for sn, v := range p.view {
		if v.entry != nil && v.entry.Node == p.srv.cfg.NodeID && v.entry.Since < p.started.UnixMilli() {
			victims = append(victims, victim{sn, v.entry.Session})
		}
	}
	p.mu.Unlock()
	for _, v := range victims {
		p.expire(v.sn, v.session, ReasonNodeLost)
	}
}

func (p *presence) heartbeat(ctx context.Context) error {
	b, _ := json.Marshal(NodeEntry{Addr: p.srv.cfg.NodeAddr, Since: p.started.UnixMilli(), Sessions: p.srv.SessionCount()})
	_, err := p.nodesKV.Put(ctx, p.srv.cfg.NodeID, b)
	return err
}
