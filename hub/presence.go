package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Presence state in JetStream.
const (
	BucketPresence = "hub_presence"
	BucketNodes    = "hub_nodes"
	StreamPresence = "HUB_PRESENCE"
)

// Reasons in presence records, besides the session end reasons.
const (
	ReasonConnected Reason = "connected"
	ReasonNodeLost  Reason = "node_lost"
)

// PresenceEntry is a device's entry in the hub_presence bucket, present
// while the device is online. Type and group are extra fields beyond the
// protocol's, so that a reader needs no second lookup.
type PresenceEntry struct {
	Node     string `json:"node"`
	Session  string `json:"session"`
	Since    int64  `json:"since"`
	LastSeen int64  `json:"last_seen"`
	Addr     string `json:"addr"`
	Type     string `json:"type,omitempty"`
	Group    string `json:"group,omitempty"`
}

// NodeEntry is a node's liveness entry in the hub_nodes bucket.
type NodeEntry struct {
	Addr     string `json:"addr"`
	Since    int64  `json:"since"`
	Sessions int    `json:"sessions"`
}

// PresenceRecord is published on hub.presence.<sn> once per change, and
// pushed to subscribed admins as /push/presence.
type PresenceRecord struct {
	SN     string `json:"sn"`
	Type   string `json:"type"`
	Group  string `json:"group"`
	Online bool   `json:"online"`
	Reason Reason `json:"reason"`
	Node   string `json:"node"`
	At     int64  `json:"at"`
}

// localDevice is this node's bookkeeping for a device session it holds or
// held: the revision of the entry it wrote, and the grace timer once the
// session has ended. Guarded by presence.mu.
type localDevice struct {
	session string
	rev     uint64
	since   int64 // the entry's since, as this node wrote it
	gone    bool  // the session ended; its grace runs
	dropped bool  // no longer this node's: replaced, or reported offline
	grace   *time.Timer
	id      *Identity
	addr    string
}

// deviceView is what this node knows of one device, kept current by the
// hub_presence watcher and the HUB_PRESENCE records. Guarded by
// presence.mu.
type deviceView struct {
	entry        *PresenceEntry // nil while offline
	local        *localDevice   // the device's session here, if any
	typ, group   string
	offlineSince int64           // when it was last reported offline
	lastSeen     int64           // the latest sign of life this node heard of
	status       json.RawMessage // the last status record's status, or nil
	statusAt     int64
}

// nodeView is what this node knows of a live node.
type nodeView struct {
	since int64
}

// presence keeps device presence in JetStream: an entry per online device
// in hub_presence, written on connect, refreshed rarely and removed after
// the offline grace; a short-TTL liveness entry per node in hub_nodes; and
// one record per change in the HUB_PRESENCE stream.
//
// Who publishes a record is decided so that there is exactly one:
//   - connected: the node whose create-only write of the entry succeeded
//     (only one can; a device that comes back while its entry still exists
//     overwrites it and nothing is published);
//   - offline (closed, timeout, kicked): the node that held the session,
//     once the grace has passed and the entry still names that session;
//   - node_lost: the live node with the smallest id, for every entry that
//     names a node whose liveness entry is gone; records carry a
//     Nats-Msg-Id, so that should two nodes briefly disagree on who is the
//     smallest, the stream keeps one.
//
// An offline record is published before the entry is removed, so a device
// that comes back must wait for the removal before its create can succeed:
// its connected record always follows the offline one. Should the device
// come back in between (the removal then fails its revision check), the
// node publishes a connected record at once.
type presence struct {
	srv     *Server
	kv      jetstream.KeyValue
	nodesKV jetstream.KeyValue
	started time.Time

	mu      sync.Mutex
	local   map[string]*localDevice // by sn. Guarded by mu.
	due     dueQueue                // local entries by refresh time. Guarded by mu.
	view    map[string]*deviceView  // by sn. Guarded by mu.
	nodes   map[string]nodeView     // live nodes by id. Guarded by mu.
	names   map[string]string       // interned node, type and group names. Guarded by mu.
	caught  bool                    // the record consumer has caught up. Guarded by mu.
	stopped bool                    // Guarded by mu.

	// refreshMu serialises refresh, which owns enc (the upkeep goroutine
	// calls it; so do load tests).
	refreshMu sync.Mutex
	enc       refreshEncoder
}

func openPresence(ctx, runCtx context.Context, srv *Server) (*presence, error) {
	cfg := srv.cfg
	p := &presence{
		srv: srv, started: cfg.Now(),
		local: make(map[string]*localDevice), view: make(map[string]*deviceView), nodes: make(map[string]nodeView),
		names: make(map[string]string),
	}
	var err error
	p.kv, err = openSoftBucket(ctx, srv.js, jetstream.KeyValueConfig{
		Bucket: BucketPresence, Description: "online devices: an entry per device, expiring when no node refreshes it",
		History: 1, TTL: cfg.PresenceTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", BucketPresence, err)
	}
	p.nodesKV, err = srv.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketNodes, Description: "live nodes: an entry per node, expiring fast when the node stops refreshing it",
		History: 1, TTL: cfg.NodeTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", BucketNodes, err)
	}
	if _, err := srv.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamPresence, Description: "presence history: one record per change",
		Subjects: []string{subjects.AllPresence}, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		MaxAge: cfg.PresenceHistory, MaxMsgsPerSubject: 1000, Duplicates: 2 * time.Minute,
		Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("hub: stream %s: %w", StreamPresence, err)
	}
	if err := p.heartbeat(ctx); err != nil {
		return nil, err
	}
	if err := p.watch(ctx, runCtx); err != nil {
		return nil, err
	}
	srv.goTask(func() { p.upkeep(runCtx) })
	// After each reconnection, this node's entries are read back: the
	// server may have lost its last writes (see reassert).
	reconnected := srv.nc.StatusChanged(nats.CONNECTED)
	srv.goTask(func() {
		defer srv.nc.RemoveStatusListener(reconnected)
		for {
			select {
			case <-runCtx.Done():
				return
			case _, ok := <-reconnected:
				if !ok {
					return
				}
				p.reassert(runCtx)
			}
		}
	})
	return p, nil
}

// watch starts the watchers and the record consumer and returns once each
// has delivered what it had at start.
func (p *presence) watch(ctx, runCtx context.Context) error {
	nodesReady := make(chan struct{})
	if err := p.srv.watchKV(runCtx, p.nodesKV, p.onNode, nodesReady); err != nil {
		return err
	}
	entriesReady := make(chan struct{})
	if err := p.srv.watchKV(runCtx, p.kv, p.onEntry, entriesReady); err != nil {
		return err
	}
	cons, err := p.srv.js.OrderedConsumer(ctx, StreamPresence, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.AllPresence}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("hub: presence records: %w", err)
	}
	info, err := p.srv.js.Stream(ctx, StreamPresence)
	if err != nil {
		return fmt.Errorf("hub: presence records: %w", err)
	}
	recordsReady := make(chan struct{})
	var once sync.Once
	caughtUp := func() {
		once.Do(func() {
			p.mu.Lock()
			p.caught = true
			p.mu.Unlock()
			close(recordsReady)
		})
	}
	if info.CachedInfo().State.Msgs == 0 {
		caughtUp()
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		p.onRecord(m.Data(), meta.Sequence.Stream)
		if meta.NumPending == 0 {
			caughtUp()
		}
	})
	if err != nil {
		return fmt.Errorf("hub: presence records: %w", err)
	}
	p.srv.goTask(func() {
		<-runCtx.Done()
		cc.Stop()
	})
	for _, ch := range []chan struct{}{nodesReady, entriesReady, recordsReady} {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("hub: load presence: %w", ctx.Err())
		}
	}
	p.reconcile()
	return nil
}

// stop ends presence upkeep at shutdown: no more records from this node,
// and its liveness entry goes, so the other nodes take over its devices'
// grace. The devices' entries stay for them.
func (p *presence) stop(ctx context.Context) {
	p.mu.Lock()
	p.stopped = true
	for _, ld := range p.local {
		if ld.grace != nil {
			ld.grace.Stop()
		}
	}
	p.mu.Unlock()
	if !p.srv.nc.IsConnected() {
		return // the entry expires by itself
	}
	if err := p.nodesKV.Delete(ctx, p.srv.cfg.NodeID); err != nil {
		p.srv.log.Warn("node liveness entry not removed", "err", err)
	}
}
