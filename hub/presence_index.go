package hub

import (
	"context"
	"errors"

	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
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
func (p *presence) putIndex(ctx context.Context, sn, session string) error {
	key := pres.IndexKey(p.srv.cfg.NodeID, sn)
	_, err := p.index.Put(ctx, key, []byte(session))
	if err != nil && storeGone(err) {
		if herr := p.srv.stores.heal(ctx, schema.BucketNodeDevices); herr == nil {
			_, err = p.index.Put(ctx, key, []byte(session))
		}
	}
	p.srv.stores.lost(schema.BucketNodeDevices, err)
	return err
}

// unindexing is a step that removes device sn from node's index. For this
// node's own index, only while the device has no session here: a session
// that came back keeps its key. It takes the device's lock, so that a
// connect in progress is not undone.
func (p *presence) unindexing(sn, node string) step {
	return p.forDevice(sn, func(ctx context.Context) (bool, error) {
		if node == p.srv.cfg.NodeID {
			p.mu.Lock()
			held := p.local[sn] != nil || p.stopped
			p.mu.Unlock()
			if held {
				return true, nil // back here; or stopped, and the key is for node_lost
			}
		}
		err := p.index.Delete(ctx, pres.IndexKey(node, sn))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			p.srv.stores.lost(schema.BucketNodeDevices, err)
			return false, err
		}
		return true, nil
	})
}

// reindexHeld runs when hub_node_devices was created again: this node puts
// back the keys of the devices it holds, including those in their grace.
func (p *presence) reindexHeld() {
	p.mu.Lock()
	var steps []step
	for sn, ld := range p.local {
		if ld.dropped {
			continue
		}
		steps = append(steps, p.forDevice(sn, func(ctx context.Context) (bool, error) {
			p.mu.Lock()
			held := !p.stopped && p.local[sn] == ld && !ld.dropped
			p.mu.Unlock()
			if !held {
				return true, nil
			}
			err := p.putIndex(ctx, sn, ld.session)
			return err == nil, err
		}))
	}
	p.mu.Unlock()
	p.retry("reindex", steps...)
}

// indexed lists the devices of node's index.
func (p *presence) indexed(ctx context.Context, node string) ([]string, error) {
	lister, err := p.index.ListKeysFiltered(ctx, pres.IndexFilter(node))
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		p.srv.stores.lost(schema.BucketNodeDevices, err)
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
func (p *presence) indexedNodes(ctx context.Context) (map[string]bool, error) {
	lister, err := p.index.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		p.srv.stores.lost(schema.BucketNodeDevices, err)
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	nodes := make(map[string]bool)
	for key := range lister.Keys() {
		if node, _, ok := pres.SplitIndexKey(key); ok {
			nodes[node] = true
		}
	}
	return nodes, ctx.Err()
}

// purgeIndex removes every key of node's index at once.
func (p *presence) purgeIndex(ctx context.Context, node string) error {
	st, err := p.srv.js.Stream(ctx, "KV_"+schema.BucketNodeDevices)
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(subjects.KVKeys(schema.BucketNodeDevices)+pres.IndexFilter(node)))
	}
	p.srv.stores.lost(schema.BucketNodeDevices, err)
	return err
}
