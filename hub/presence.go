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
	"golang.org/x/time/rate"
)

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
	// The device's last record in HUB_PRESENCE as this node saw it: its
	// stream sequence (0: none seen) and whether it says online. A guess
	// that may lag; see record.
	recSeq    uint64
	recOnline bool
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
// Each device's records alternate strictly: connected, offline,
// connected... A record is appended only after the device's last one, as
// this node believes it to be (a compare-and-set on the subject's last
// sequence), and only when that last one says otherwise; a failed check
// reads the last record back and decides again (see record).
//
// Who publishes a record is decided so that there is one per change:
//   - connected: the node whose create-only write of the entry succeeded
//     (only one can; a device that comes back while its entry still exists
//     overwrites it and nothing is published, unless its last record says
//     offline);
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
//
// Every write whose outcome is unknown (a timeout: it may have taken
// effect) is followed by a read: the next attempt looks at the entry and
// the last record as they are, and does what is left. Work that fails is
// tried again, backing off, until it is done or the hub stops. On this
// node, the writes of one device are serialised (lockDevice).
type presence struct {
	srv     *Server
	kv      jetstream.KeyValue
	nodesKV jetstream.KeyValue
	records jetstream.Stream // HUB_PRESENCE
	started time.Time
	locks   deviceLocks
	warnLog *rate.Limiter // per-device warnings, node-wide

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
		srv: srv, started: cfg.Now(), locks: deviceLocks{m: make(map[string]*deviceLock)}, warnLog: rate.NewLimiter(1, 5),
		local: make(map[string]*localDevice), view: make(map[string]*deviceView), nodes: make(map[string]nodeView),
		names: make(map[string]string),
	}
	entriesCfg := jetstream.KeyValueConfig{
		Bucket: BucketPresence, Description: "online devices: an entry per device, expiring when no node refreshes it",
		History: 1, TTL: cfg.PresenceTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	}
	createEntries := func(ctx context.Context) (jetstream.KeyValue, error) { return openSoftBucket(ctx, srv.js, entriesCfg) }
	nodesCfg := jetstream.KeyValueConfig{
		Bucket: BucketNodes, Description: "live nodes: an entry per node, expiring fast when the node stops refreshing it",
		History: 1, TTL: cfg.NodeTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	}
	createNodes := func(ctx context.Context) (jetstream.KeyValue, error) {
		return createOrUpdate(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			return srv.js.CreateOrUpdateKeyValue(ctx, nodesCfg)
		})
	}
	recordsCfg := jetstream.StreamConfig{
		Name: StreamPresence, Description: "presence history: one record per change",
		Subjects: []string{subjects.AllPresence}, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		MaxAge: cfg.PresenceHistory, MaxMsgsPerSubject: 1000, Duplicates: 2 * time.Minute,
		Discard: jetstream.DiscardOld, AllowDirect: true, // listings read last records by direct get
	}
	createRecords := func(ctx context.Context) (jetstream.Stream, error) {
		return createOrUpdate(ctx, func(ctx context.Context) (jetstream.Stream, error) {
			return srv.js.CreateOrUpdateStream(ctx, recordsCfg)
		})
	}
	var err error
	if p.kv, err = createEntries(ctx); err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", BucketPresence, err)
	}
	if p.nodesKV, err = createNodes(ctx); err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", BucketNodes, err)
	}
	if p.records, err = createRecords(ctx); err != nil {
		return nil, fmt.Errorf("hub: stream %s: %w", StreamPresence, err)
	}
	if err := p.heartbeat(ctx); err != nil {
		return nil, err
	}
	// The stores, with the feeds that keep the view: nodes first, so that
	// the entries of nodes that are not live can be told apart, then the
	// entries, then the records. A store created again starts its feeds
	// anew; this node first writes back the entries of the devices it
	// holds, and its liveness entry.
	for _, st := range []*store{
		{
			name: BucketNodes, stream: "KV_" + BucketNodes, create: discard(createNodes),
			recreated: func() { srv.goTask(p.beat) },
			feeds:     []*feed{{start: p.followNodes}},
		},
		{
			name: BucketPresence, stream: "KV_" + BucketPresence, create: discard(createEntries),
			recreated: func() { srv.goTask(p.rewriteHeld) },
			feeds:     []*feed{{start: p.followEntries}},
		},
		{
			name: StreamPresence, stream: StreamPresence, create: discard(createRecords),
			recreated: p.forgetRecords,
			feeds:     []*feed{{start: p.followRecords}},
		},
	} {
		if err := srv.stores.add(ctx, runCtx, st); err != nil {
			return nil, err
		}
	}
	p.reconcile()
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

// discard adapts a create that returns a handle to a store's create.
func discard[T any](create func(context.Context) (T, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := create(ctx)
		return err
	}
}

// followNodes starts the hub_nodes watcher. Started anew on a bucket
// created again, it forgets the nodes the new bucket does not name once it
// has loaded those it does: such a node is found lost now, unless it
// refreshes its entry within its TTL.
func (p *presence) followNodes(ctx context.Context, fresh bool) (<-chan struct{}, error) {
	seen := make(map[string]bool) // owned by the watcher goroutine
	loaded := make(chan struct{})
	err := p.srv.watchKV(ctx, p.nodesKV, func(e jetstream.KeyValueEntry, live bool) {
		if !live {
			seen[e.Key()] = true
		}
		p.onNode(e, live)
	}, func() {
		if fresh {
			p.forgetNodesBut(seen)
		}
		close(loaded)
	})
	return loaded, err
}

// followEntries starts the hub_presence watcher. Started anew on a bucket
// created again, it drops from the view the entries the new bucket does not
// have once it has loaded those it has, with no record: their nodes write
// them back (see rewriteHeld), and nobody saw them go.
func (p *presence) followEntries(ctx context.Context, fresh bool) (<-chan struct{}, error) {
	seen := make(map[string]bool) // owned by the watcher goroutine
	loaded := make(chan struct{})
	err := p.srv.watchKV(ctx, p.kv, func(e jetstream.KeyValueEntry, live bool) {
		if !live {
			seen[e.Key()] = true
		}
		p.onEntry(e, live)
	}, func() {
		if fresh {
			p.mu.Lock()
			for sn, v := range p.view {
				if v.entry != nil && !seen[sn] {
					v.entry = nil
				}
			}
			p.mu.Unlock()
		}
		close(loaded)
	})
	return loaded, err
}

// followRecords starts the consumer of HUB_PRESENCE: at start from each
// device's last record, which the view needs, pushing only those that come
// after; started anew on a stream created again, from its first record,
// all of them new to this node.
func (p *presence) followRecords(ctx context.Context, fresh bool) (<-chan struct{}, error) {
	policy := jetstream.DeliverLastPerSubjectPolicy
	if fresh {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := p.srv.js.OrderedConsumer(ctx, StreamPresence, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.AllPresence}, DeliverPolicy: policy,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: presence records: %w", err)
	}
	info, err := p.records.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("hub: presence records: %w", err)
	}
	loaded := make(chan struct{})
	var once sync.Once
	caughtUp := func() {
		once.Do(func() {
			p.mu.Lock()
			p.caught = true
			p.mu.Unlock()
			close(loaded)
		})
	}
	if fresh || info.State.Msgs == 0 {
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
		return nil, fmt.Errorf("hub: presence records: %w", err)
	}
	p.srv.goTask(func() {
		<-ctx.Done()
		cc.Stop()
	})
	return loaded, nil
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
