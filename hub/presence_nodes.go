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
	var victims []victim
	for sn, v := range p.view {
		if v.entry != nil && v.entry.Node == lost {
			victims = append(victims, victim{sn, v.entry.Session})
		}
	}
	p.mu.Unlock()
	p.expireAll(victims)
}

// victim is a device session to report offline with node_lost.
type victim struct{ sn, session string }

// expireAll reports the victims offline with node_lost, each tried until
// done; one whose writes fail does not hold the others up.
func (p *presence) expireAll(victims []victim) {
	steps := make([]step, len(victims))
	for i, v := range victims {
		steps[i] = p.expiry(v.sn, v.session, ReasonNodeLost)
	}
	p.retry("node_lost", steps...)
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
	var victims []victim
	for sn, v := range p.view {
		if v.entry != nil && v.entry.Node == p.srv.cfg.NodeID && v.entry.Since < p.started.UnixMilli() {
			victims = append(victims, victim{sn, v.entry.Session})
		}
	}
	p.mu.Unlock()
	p.expireAll(victims)
}

// beat writes this node's liveness entry now, as upkeep does.
func (p *presence) beat() {
	ctx, cancel := context.WithTimeout(p.srv.runCtx, presenceCallTimeout)
	defer cancel()
	if err := p.heartbeat(ctx); err != nil && ctx.Err() == nil {
		p.srv.log.Warn("node liveness not refreshed", "err", err)
	}
}

// forgetNodesBut runs when the hub_nodes watcher started anew on a bucket
// created again has loaded it: a node it does not name is found lost now,
// unless it writes its entry again within its TTL (a live node refreshes
// it every third of that).
func (p *presence) forgetNodesBut(seen map[string]bool) {
	var gone []string
	p.mu.Lock()
	for id := range p.nodes {
		if !seen[id] && id != p.srv.cfg.NodeID {
			gone = append(gone, id)
			delete(p.nodes, id)
		}
	}
	p.mu.Unlock()
	deadline := p.srv.cfg.Now().Add(p.srv.cfg.NodeTTL + p.srv.cfg.OfflineGrace)
	for _, id := range gone {
		p.afterDeadline(deadline, func() { p.nodeLost(id) })
	}
}

func (p *presence) heartbeat(ctx context.Context) error {
	b, _ := json.Marshal(NodeEntry{Addr: p.srv.cfg.NodeAddr, Since: p.started.UnixMilli(), Sessions: p.srv.SessionCount()})
	_, err := p.nodesKV.Put(ctx, p.srv.cfg.NodeID, b)
	p.srv.stores.lost(BucketNodes, err)
	return err
}
