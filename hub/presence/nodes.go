package presence

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/fleethub/fleethub/hub/schema"
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
func (tr *Tracker) onNode(e jetstream.KeyValueEntry, live bool) {
	id := e.Key()
	if e.Operation() == jetstream.KeyValuePut {
		var ne schema.NodeEntry
		_ = json.Unmarshal(e.Value(), &ne)
		tr.mu.Lock()
		tr.nodes[id] = nodeView{since: ne.Since}
		tr.mu.Unlock()
		return
	}
	tr.mu.Lock()
	delete(tr.nodes, id)
	tr.mu.Unlock()
	if !live || id == tr.cfg.NodeID {
		return
	}
	tr.log.Warn("node lost", "lost", id, "expired", e.Operation() == jetstream.KeyValuePurge)
	tr.afterDeadline(tr.now().Add(tr.cfg.OfflineGrace), func() { tr.nodeLost(id) })
}

// afterDeadline runs f at deadline (at once if it has passed) on a
// goroutine that the spawner's owner waits for, unless the tracker stops
// first.
func (tr *Tracker) afterDeadline(deadline time.Time, f func()) {
	d := max(deadline.Sub(tr.now()), 0)
	tr.cfg.Go(func() {
		fire := make(chan struct{})
		t := tr.cfg.Clock.AfterFunc(d, func() { close(fire) })
		defer t.Stop()
		select {
		case <-fire:
			f()
		case <-tr.runCtx.Done():
		}
	})
}

// nodeLost reports offline, with node_lost, every device of the lost
// node's index whose entry still names that node, if this node is the
// coordinator (smallest live id) and the lost node has not come back.
// The devices are worked on in batches (see bulkLost), and what that
// leaves side by side (see retry): a node that held 10,000 devices has
// them all reported within seconds.
func (tr *Tracker) nodeLost(lost string) {
	tr.mu.Lock()
	if tr.stopped || !tr.isCoordinatorLocked() {
		tr.mu.Unlock()
		return
	}
	if _, back := tr.nodes[lost]; back {
		tr.mu.Unlock()
		return
	}
	tr.mu.Unlock()
	switch tr.confirmLost(lost) {
	case lossBack:
		return
	case lossUnsure:
		// Not now: this node cannot tell a lost node from a store that
		// was not writable. It looks again shortly, until the node is
		// back (its entry seen) or its loss is confirmed.
		tr.afterDeadline(tr.now().Add(tr.cfg.NodeTTL/3), func() { tr.nodeLost(lost) })
		return
	}
	var sns []string
	tr.retry("node_lost", func(ctx context.Context) (bool, error) {
		var err error
		sns, err = tr.indexed(ctx, lost)
		return err == nil, err
	})
	tr.retry("node_lost", tr.bulkLost(lost, sns)...)
	if tr.runCtx.Err() != nil {
		return // not all done: the next coordinator reads the index again
	}
	// All reported: the lost node's index goes in one purge.
	tr.retry("node_lost", func(ctx context.Context) (bool, error) {
		err := tr.purgeIndex(ctx, lost)
		return err == nil, err
	})
}

// What confirmLost found of a node whose entry went away.
type lossVerdict int

const (
	lossConfirmed lossVerdict = iota // lost: its devices go offline
	lossBack                         // its entry is there again
	lossUnsure                       // not known yet: look again later
)

// confirmLost decides, at the end of its grace, whether node lost is
// lost. Its entry going away is not enough: while hub_nodes elects a new
// leader (a server of the cluster died) no node can write its entry, the
// new leader expires every entry older than the node TTL, and every node
// sees every other go. So a node is confirmed lost only when
//   - this node's own liveness writes have all succeeded for at least the
//     node TTL: the bucket has been writable long enough for a live node,
//     which refreshes every third of the TTL, to have written its entry
//     (a node whose own writes fail does not judge others); and
//   - the entry, read from the bucket now (not from the watcher, which may
//     lag after an election), is absent.
//
// Otherwise the verdict is unsure, or back when the entry is there.
func (tr *Tracker) confirmLost(lost string) lossVerdict {
	tr.mu.Lock()
	healthy := !tr.beatOK.IsZero() && !tr.now().Before(tr.beatOK.Add(tr.cfg.NodeTTL))
	tr.mu.Unlock()
	if !healthy {
		tr.metrics.Retried("node_lost_unsure", 1)
		return lossUnsure
	}
	ctx, cancel := context.WithTimeout(tr.runCtx, CallTimeout)
	defer cancel()
	_, err := tr.nodesKV.Get(ctx, lost)
	switch {
	case err == nil:
		tr.log.Info("node back before its loss was confirmed", "node", lost)
		return lossBack
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return lossConfirmed
	default:
		tr.stores.Lost(tr.cfg.Layout.Nodes(), err)
		tr.metrics.Retried("node_lost_unsure", 1)
		return lossUnsure
	}
}

// lostDevice is the step that reports device sn of node's index offline
// with node_lost, if its entry still names node (and, when stale is set,
// stale says the entry is one to report). Of a lost node's index, the
// caller purges the keys once all are done; of this node's own (stale
// set), each key goes once its device is settled.
func (tr *Tracker) lostDevice(sn, node string, stale func(*schema.PresenceEntry) bool) step {
	var expiry step // once the entry has named the session to report
	return func(ctx context.Context) (bool, error) {
		if expiry == nil {
			e, err := tr.kv.Get(ctx, sn)
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				tr.stores.Lost(tr.cfg.Layout.Presence(), err)
				return false, err
			}
			var pe schema.PresenceEntry
			report := err == nil && json.Unmarshal(e.Value(), &pe) == nil && pe.Node == node && (stale == nil || stale(&pe))
			switch {
			case report && stale == nil:
				expiry = tr.expiryStep(sn, pe.Session, schema.ReasonNodeLost, e, false, false)
			case report:
				expiry = tr.then(tr.expiryStep(sn, pe.Session, schema.ReasonNodeLost, e, false, false), tr.unindexing(sn, node))
			case stale == nil:
				return true, nil // offline already, or held by another node
			default:
				// Offline already, or held by another node or by this
				// node's current run: only the key goes, if it is not
				// this run's.
				expiry = tr.unindexing(sn, node)
			}
		}
		return expiry(ctx)
	}
}

func (tr *Tracker) isCoordinatorLocked() bool {
	me := tr.cfg.NodeID
	for id := range tr.nodes {
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
func (tr *Tracker) reconcile(ctx context.Context) {
	deadline := tr.now().Add(tr.cfg.OfflineGrace)
	tr.afterDeadline(deadline, tr.expireStaleOwn)
	tr.mu.Lock()
	coordinator := tr.isCoordinatorLocked()
	live := make(map[string]bool, len(tr.nodes))
	for id := range tr.nodes {
		live[id] = true
	}
	tr.mu.Unlock()
	if !coordinator {
		return
	}
	var nodes map[string]bool
	tr.retry("reconcile", func(ctx context.Context) (bool, error) {
		var err error
		nodes, err = tr.indexedNodes(ctx)
		return err == nil, err
	})
	for id := range nodes {
		if !live[id] && id != tr.cfg.NodeID && ctx.Err() == nil {
			tr.afterDeadline(deadline, func() { tr.nodeLost(id) })
		}
	}
}

// expireStaleOwn reports offline the devices this node held before it
// restarted, unless they came back.
func (tr *Tracker) expireStaleOwn() {
	me, started := tr.cfg.NodeID, tr.started.UnixMilli()
	var sns []string
	tr.retry("node_lost", func(ctx context.Context) (bool, error) {
		var err error
		sns, err = tr.indexed(ctx, me)
		return err == nil, err
	})
	stale := func(pe *schema.PresenceEntry) bool { return pe.Since < started }
	steps := make([]step, len(sns))
	for i, sn := range sns {
		steps[i] = tr.lostDevice(sn, me, stale)
	}
	tr.retry("node_lost", steps...)
}

// beat writes this node's liveness entry now, as upkeep does.
func (tr *Tracker) beat() {
	ctx, cancel := context.WithTimeout(tr.runCtx, CallTimeout)
	defer cancel()
	if err := tr.heartbeat(ctx); err != nil && ctx.Err() == nil {
		tr.log.Warn("node liveness not refreshed", "err", err)
	}
}

// forgetNodesBut runs when the hub_nodes watcher started anew on a bucket
// created again has loaded it: a node it does not name is found lost now,
// unless it writes its entry again within its TTL (a live node refreshes
// it every third of that).
func (tr *Tracker) forgetNodesBut(seen map[string]bool) {
	var gone []string
	tr.mu.Lock()
	for id := range tr.nodes {
		if !seen[id] && id != tr.cfg.NodeID {
			gone = append(gone, id)
			delete(tr.nodes, id)
		}
	}
	tr.mu.Unlock()
	deadline := tr.now().Add(tr.cfg.NodeTTL + tr.cfg.OfflineGrace)
	for _, id := range gone {
		tr.afterDeadline(deadline, func() { tr.nodeLost(id) })
	}
}

func (tr *Tracker) heartbeat(ctx context.Context) error {
	b, _ := json.Marshal(schema.NodeEntry{Addr: tr.cfg.NodeAddr, Since: tr.started.UnixMilli(), Sessions: tr.cfg.Sessions()})
	_, err := tr.nodesKV.Put(ctx, tr.cfg.NodeID, b)
	tr.stores.Lost(tr.cfg.Layout.Nodes(), err)
	tr.mu.Lock()
	switch {
	case err != nil:
		tr.beatOK = time.Time{} // a new run of good writes starts at the next
	case tr.beatOK.IsZero():
		tr.beatOK = tr.now()
	}
	tr.mu.Unlock()
	return err
}
