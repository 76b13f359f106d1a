package presence

import (
	"context"
	"errors"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// The index of each node's devices, bucket hub_node_devices: a key
// <node>.<sn>, its value the session, put before the device's entry is
// written and removed once the device has left the node. Nobody watches
// it: the coordinator lists a node's keys only when that node is lost
// (see nodeLost), so a node never pays for the devices of others. A key
// is a hint, not the truth: the device's entry says which node holds it,
// and a key whose entry names another node (or none) is passed over and
// removed.

// putIndex puts device sn in this node's index, for session. A missing
// bucket is created again, once.
func (tr *Tracker) putIndex(ctx context.Context, sn, session string) error {
	key := IndexKey(tr.cfg.NodeID, sn)
	_, err := tr.index.Put(ctx, key, []byte(session))
	if err != nil && storeGone(err) {
		if herr := tr.stores.Heal(ctx, tr.cfg.Layout.NodeDevices()); herr == nil {
			_, err = tr.index.Put(ctx, key, []byte(session))
		}
	}
	tr.stores.Lost(tr.cfg.Layout.NodeDevices(), err)
	return err
}

// unindexing is a step that removes device sn from node's index. For this
// node's own index, only while the device has no session here: a session
// that came back keeps its key. It takes the device's lock, so that a
// connect in progress is not undone.
func (tr *Tracker) unindexing(sn, node string) step {
	return tr.forDevice(sn, func(ctx context.Context) (bool, error) {
		if node == tr.cfg.NodeID {
			tr.mu.Lock()
			held := tr.local[sn] != nil || tr.stopped
			tr.mu.Unlock()
			if held {
				return true, nil // back here; or stopped, and the key is for node_lost
			}
		}
		err := tr.index.Delete(ctx, IndexKey(node, sn))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			tr.stores.Lost(tr.cfg.Layout.NodeDevices(), err)
			return false, err
		}
		return true, nil
	})
}

// reindexHeld runs when hub_node_devices was created again: this node puts
// back the keys of the devices it holds, including those in their grace.
func (tr *Tracker) reindexHeld() {
	tr.mu.Lock()
	var steps []step
	for sn, ld := range tr.local {
		if ld.dropped {
			continue
		}
		steps = append(steps, tr.forDevice(sn, func(ctx context.Context) (bool, error) {
			tr.mu.Lock()
			held := !tr.stopped && tr.local[sn] == ld && !ld.dropped
			tr.mu.Unlock()
			if !held {
				return true, nil
			}
			err := tr.putIndex(ctx, sn, ld.session)
			return err == nil, err
		}))
	}
	tr.mu.Unlock()
	tr.retry("reindex", steps...)
}

// indexed lists the devices of node's index.
func (tr *Tracker) indexed(ctx context.Context, node string) ([]string, error) {
	lister, err := tr.index.ListKeysFiltered(ctx, IndexFilter(node))
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		tr.stores.Lost(tr.cfg.Layout.NodeDevices(), err)
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	prefix := node + "."
	var sns []string
	for key := range lister.Keys() {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix {
			sns = append(sns, key[len(prefix):])
		}
	}
	return sns, ctx.Err()
}

// indexedNodes lists the nodes that the index names, with no value read.
// Only the coordinator calls it, once at start, to find nodes that died
// while no node was there to see it.
func (tr *Tracker) indexedNodes(ctx context.Context) (map[string]bool, error) {
	lister, err := tr.index.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		tr.stores.Lost(tr.cfg.Layout.NodeDevices(), err)
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	nodes := make(map[string]bool)
	for key := range lister.Keys() {
		if node, _, ok := SplitIndexKey(key); ok {
			nodes[node] = true
		}
	}
	return nodes, ctx.Err()
}

// purgeIndex removes every key of node's index at once.
func (tr *Tracker) purgeIndex(ctx context.Context, node string) error {
	st, err := tr.cfg.JS.Stream(ctx, "KV_"+tr.cfg.Layout.NodeDevices())
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(subjects.KVKeys(tr.cfg.Layout.NodeDevices())+IndexFilter(node)))
	}
	tr.stores.Lost(tr.cfg.Layout.NodeDevices(), err)
	return err
}
