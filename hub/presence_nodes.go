package hub

import (
	"context"
	"encoding/json"
	"errors"
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

// nodeLost reports offline, with node_lost, every device of the lost
// node's index whose entry still names that node, if this node is the
// coordinator (smallest live id) and the lost node has not come back.
// The devices are worked on in batches (see bulkLost), and what that
// leaves side by side (see retry): a node that held 10,000 devices has
// them all reported within seconds.
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
	p.mu.Unlock()
	var sns []string
	p.retry("node_lost", func(ctx context.Context) (bool, error) {
		var err error
		sns, err = p.indexed(ctx, lost)
		return err == nil, err
	})
	p.retry("node_lost", p.bulkLost(lost, sns)...)
	if p.srv.runCtx.Err() != nil {
		return // not all done: the next coordinator reads the index again
	}
	// All reported: the lost node's index goes in one purge.
	p.retry("node_lost", func(ctx context.Context) (bool, error) {
		err := p.purgeIndex(ctx, lost)
		return err == nil, err
	})
}

// lostDevice is the step that reports device sn of node's index offline
// with node_lost, if its entry still names node (and, when stale is set,
// stale says the entry is one to report). Of a lost node's index, the
// caller purges the keys once all are done; of this node's own (stale
// set), each key goes once its device is settled.
func (p *presence) lostDevice(sn, node string, stale func(*PresenceEntry) bool) step {
	var expiry step // once the entry has named the session to report
	return func(ctx context.Context) (bool, error) {
		if expiry == nil {
			e, err := p.kv.Get(ctx, sn)
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				p.srv.stores.lost(BucketPresence, err)
				return false, err
			}
			var pe PresenceEntry
			report := err == nil && json.Unmarshal(e.Value(), &pe) == nil && pe.Node == node && (stale == nil || stale(&pe))
			switch {
			case report && stale == nil:
				expiry = p.expiryStep(sn, pe.Session, ReasonNodeLost, e, false, false)
			case report:
				expiry = p.then(p.expiryStep(sn, pe.Session, ReasonNodeLost, e, false, false), p.unindexing(sn, node))
			case stale == nil:
				return true, nil // offline already, or held by another node
			default:
				// Offline already, or held by another node or by this
				// node's current run: only the key goes, if it is not
				// this run's.
				expiry = p.unindexing(sn, node)
			}
		}
		return expiry(ctx)
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

// reconcile, at start, schedules the devices left by nodes that are not
// live, including this node's own previous run: they go offline after the
// grace unless they come back. Other nodes' are found by the coordinator
// alone, in one pass over the index's keys: nodes that died while no node
// was there to see them go.
func (p *presence) reconcile(ctx context.Context) {
	deadline := p.srv.cfg.Now().Add(p.srv.cfg.OfflineGrace)
	p.afterDeadline(deadline, p.expireStaleOwn)
	p.mu.Lock()
	coordinator := p.isCoordinatorLocked()
	live := make(map[string]bool, len(p.nodes))
	for id := range p.nodes {
		live[id] = true
	}
	p.mu.Unlock()
	if !coordinator {
		return
	}
	var nodes map[string]bool
	p.retry("reconcile", func(ctx context.Context) (bool, error) {
		var err error
		nodes, err = p.indexedNodes(ctx)
		return err == nil, err
	})
	for id := range nodes {
		if !live[id] && id != p.srv.cfg.NodeID && ctx.Err() == nil {
			p.afterDeadline(deadline, func() { p.nodeLost(id) })
		}
	}
}

// expireStaleOwn reports offline the devices this node held before it
// restarted, unless they came back.
func (p *presence) expireStaleOwn() {
	me, started := p.srv.cfg.NodeID, p.started.UnixMilli()
	var sns []string
	p.retry("node_lost", func(ctx context.Context) (bool, error) {
		var err error
		sns, err = p.indexed(ctx, me)
		return err == nil, err
	})
	stale := func(pe *PresenceEntry) bool { return pe.Since < started }
	steps := make([]step, len(sns))
	for i, sn := range sns {
		steps[i] = p.lostDevice(sn, me, stale)
	}
	p.retry("node_lost", steps...)
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
