package presence

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// localDevice is this node's bookkeeping for a device session it holds or
// held: the revision of the entry it wrote, and the grace timer once the
// session has ended. Guarded by Tracker.mu.
type localDevice struct {
	session string
	rev     uint64
	since   int64 // the entry's since, as this node wrote it
	gone    bool  // the session ended; its grace runs
	dropped bool  // no longer this node's: replaced, or reported offline
	grace   Timer
	dev     Device
	addr    string
	dueAt   int64 // when its refresh is queued (see schedule)
	// rewrites is how many of its next refreshes come early, after
	// moveSettled, for a device that moved in from another data centre.
	rewrites int
}

// nodeView is what this node knows of a live node.
type nodeView struct {
	since int64
}

// Tracker keeps device presence in JetStream: an entry per online device
// in hub_presence, written on connect, refreshed rarely and removed after
// the offline grace; a short-TTL liveness entry per node in hub_nodes; a
// key per device a node holds in hub_node_devices; and one record per
// change in the HUB_PRESENCE stream.
//
// A node pays only for its own devices: it keeps the state of the devices
// it holds in memory (localDevice), and neither watches hub_presence nor
// consumes HUB_PRESENCE. What it needs of other devices it reads when it
// needs it: the last record of a device before appending one, the entry
// of a device before taking it over or reporting it offline, the index of
// a node's devices when that node is lost. Only hub_nodes, small, is
// watched by every node.
//
// Each device's records alternate strictly: connected, offline,
// connected... A record is appended only after the device's last one, as
// read from the stream (a compare-and-set on the subject's last
// sequence), and only when that last one says otherwise; a failed check
// reads the last record again and decides again (see record).
//
// Who publishes a record is decided so that there is one per change:
//   - connected: the node whose create-only write of the entry succeeded
//     (only one can; a device that comes back while its entry still exists
//     overwrites it and nothing is published, unless its last record says
//     offline);
//   - offline (closed, timeout, kicked): the node that held the session,
//     once the grace has passed and the entry still names that session;
//   - node_lost: the live node with the smallest id (the coordinator), for
//     every device that the lost node's index names and whose entry still
//     names that node, once the loss is confirmed (confirmLost); records carry a Nats-Msg-Id, so that should two
//     nodes briefly disagree on who is the smallest, the stream keeps one.
//
// An offline record is published before the entry is removed, so a device
// that comes back must wait for the removal before its create can succeed:
// its connected record always follows the offline one. Should the device
// come back in between (the removal then fails its revision check), the
// node publishes a connected record at once.
//
// A node learns that an entry it holds changed under it from its own
// writes: each refresh is checked against the revision the node last
// wrote, and a refresh refused reads the entry back. Gone (reported
// offline while this node was cut off, or lost by NATS), it is written
// again, with a connected record if the last record says offline; taken
// by another session, the takeover announcement closes this one.
//
// Every write whose outcome is unknown (a timeout: it may have taken
// effect) is followed by a read: the next attempt looks at the entry and
// the last record as they are, and does what is left. Work that fails is
// tried again, backing off, until it is done or the tracker stops. On this
// node, the writes of one device are serialised (lockDevice).
type Tracker struct {
	cfg     Config
	runCtx  context.Context // the tracker's work runs until it ends
	cancel  context.CancelFunc
	log     *slog.Logger
	metrics Metrics
	stores  Stores
	kv      jetstream.KeyValue
	nodesKV jetstream.KeyValue
	index   jetstream.KeyValue // hub_node_devices
	records jetstream.Stream   // HUB_PRESENCE (the own one: Layout.PresenceStream)
	// entryPrefix is the subject prefix of the own bucket's entries.
	entryPrefix string
	pubJS       jetstream.JetStream // for refreshes: acknowledgements that time out
	started     time.Time
	locks       Locks
	warnLog     *rate.Limiter // per-device warnings, node-wide

	mu      sync.Mutex
	local   map[string]*localDevice // by sn. Guarded by mu.
	due     Queue[*localDevice]     // local entries by refresh time. Guarded by mu.
	nodes   map[string]nodeView     // live nodes by id. Guarded by mu.
	stopped bool                    // Guarded by mu.
	// beatOK is when the current run of successful liveness writes of
	// this node began; zero after a failed one (see confirmLost).
	// Guarded by mu.
	beatOK time.Time
	// unsure holds the ids of records whose append got no answer (see
	// record). Guarded by mu.
	unsure map[string]struct{}

	// refreshMu serialises refresh, which owns enc (the upkeep goroutine
	// calls it; so do load tests).
	refreshMu sync.Mutex
	enc       refreshEncoder
}

// Open creates or updates the presence buckets and stream, writes this
// node's liveness entry, registers the stores (see Config.Register; their
// feeds have loaded when it returns) and starts the tracker's upkeep, to
// run until cfg.RunCtx ends or Stop. ctx bounds the setup calls.
func Open(ctx context.Context, cfg Config) (*Tracker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	runCtx, cancel := context.WithCancel(cfg.RunCtx)
	tr := &Tracker{
		cfg: cfg, runCtx: runCtx, cancel: cancel, log: cfg.Log, metrics: cfg.Metrics, stores: cfg.Stores,
		started: cfg.Clock.Now(), warnLog: rate.NewLimiter(1, 5),
		local: make(map[string]*localDevice), nodes: make(map[string]nodeView), unsure: make(map[string]struct{}),
	}
	if err := tr.open(ctx); err != nil {
		cancel() // ends the feeds it started
		return nil, err
	}
	return tr, nil
}

// open is Open's work, once the tracker is made.
func (tr *Tracker) open(ctx context.Context) error {
	cfg, js := tr.cfg, tr.cfg.JS
	runCtx := tr.runCtx
	names := cfg.Layout
	placement := Placement(names)
	tr.entryPrefix = subjects.KVKeys(names.Presence())
	entriesCfg := jetstream.KeyValueConfig{
		Bucket: names.Presence(), Description: "online devices: an entry per device, expiring when no node refreshes it",
		History: 1, TTL: cfg.PresenceTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		Placement: placement,
	}
	createEntries := func(ctx context.Context) (jetstream.KeyValue, error) { return OpenSoftBucket(ctx, js, entriesCfg) }
	nodesCfg := jetstream.KeyValueConfig{
		Bucket: names.Nodes(), Description: "live nodes: an entry per node, expiring fast when the node stops refreshing it",
		History: 1, TTL: cfg.NodeTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		Placement: placement,
	}
	createNodes := func(ctx context.Context) (jetstream.KeyValue, error) {
		return jscreate.KeyValue(ctx, js, nodesCfg)
	}
	// The index has no TTL: a key lives as long as its node holds the
	// device, and the coordinator removes those of a lost node.
	indexCfg := jetstream.KeyValueConfig{
		Bucket: names.NodeDevices(), Description: "the devices each node holds: a key <node>.<sn>, read when the node is lost",
		History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas, Placement: placement,
	}
	createIndex := func(ctx context.Context) (jetstream.KeyValue, error) {
		return jscreate.KeyValue(ctx, js, indexCfg)
	}
	recordsCfg := jetstream.StreamConfig{
		Name: names.PresenceStream(), Description: "presence history: one record per change",
		Subjects: []string{names.PresenceSubjects()}, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		MaxAge: cfg.History, MaxMsgsPerSubject: 1000, Duplicates: 2 * time.Minute,
		Discard: jetstream.DiscardOld, AllowDirect: true, // listings read last records by direct get
		Placement: placement,
	}
	if names.DCMode() {
		// Live subscribers of hub.presence.<sn> see the data centre's
		// records as in classic mode.
		recordsCfg.RePublish = &jetstream.RePublish{Source: names.PresenceSubjects(), Destination: subjects.Prefix + ".presence.{{wildcard(1)}}"}
	}
	createRecords := func(ctx context.Context) (jetstream.Stream, error) {
		return jscreate.Stream(ctx, js, recordsCfg)
	}
	var err error
	// Refreshes are published asynchronously; one whose acknowledgement
	// never comes must not stay pending for ever (see settle).
	pubOpts := []jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(CallTimeout),
		jetstream.WithPublishAsyncMaxPending(2 * maxRefreshPerSweep)}
	if cfg.JSDomain != "" {
		tr.pubJS, err = jetstream.NewWithDomain(cfg.Conn, cfg.JSDomain, pubOpts...)
	} else {
		tr.pubJS, err = jetstream.New(cfg.Conn, pubOpts...)
	}
	if err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	if tr.kv, err = createEntries(ctx); err != nil {
		return fmt.Errorf("presence: bucket %s: %w", names.Presence(), err)
	}
	if tr.nodesKV, err = createNodes(ctx); err != nil {
		return fmt.Errorf("presence: bucket %s: %w", names.Nodes(), err)
	}
	if tr.index, err = createIndex(ctx); err != nil {
		return fmt.Errorf("presence: bucket %s: %w", names.NodeDevices(), err)
	}
	if tr.records, err = createRecords(ctx); err != nil {
		return fmt.Errorf("presence: stream %s: %w", names.PresenceStream(), err)
	}
	if err := tr.heartbeat(ctx); err != nil {
		return err
	}
	// The stores. Only hub_nodes has a feed: the live nodes, so that a
	// lost one is found. A store created again starts its feeds anew; this
	// node first writes back what it holds: its liveness entry, its
	// devices' entries and their index keys.
	for _, st := range []Store{
		{
			Name: names.Nodes(), Stream: "KV_" + names.Nodes(), Create: discard(createNodes),
			Recreated: func() { tr.cfg.Go(tr.beat) },
			Follow:    tr.followNodes,
		},
		{
			Name: names.Presence(), Stream: "KV_" + names.Presence(), Create: discard(createEntries),
			Recreated: func() { tr.cfg.Go(tr.rewriteHeld) },
		},
		{
			Name: names.NodeDevices(), Stream: "KV_" + names.NodeDevices(), Create: discard(createIndex),
			Recreated: func() { tr.cfg.Go(tr.reindexHeld) },
		},
		{Name: names.PresenceStream(), Stream: names.PresenceStream(), Create: discard(createRecords)},
	} {
		if err := tr.register(ctx, st); err != nil {
			return err
		}
	}
	tr.cfg.Go(func() { tr.reconcile(runCtx) })
	tr.cfg.Go(func() { tr.upkeep(runCtx) })
	// After each reconnection, this node's entries are read back: the
	// server may have lost its last writes (see reassert).
	reconnected := cfg.Conn.StatusChanged(nats.CONNECTED)
	tr.cfg.Go(func() {
		defer cfg.Conn.RemoveStatusListener(reconnected)
		for {
			select {
			case <-runCtx.Done():
				return
			case _, ok := <-reconnected:
				if !ok {
					return
				}
				tr.reassert(runCtx)
			}
		}
	})
	return nil
}

// register hands st to Config.Register, or, with none, starts its feed
// here until the tracker stops and waits for it to load.
func (tr *Tracker) register(ctx context.Context, st Store) error {
	if tr.cfg.Register != nil {
		return tr.cfg.Register(ctx, st)
	}
	if st.Follow == nil {
		return nil
	}
	loaded, err := st.Follow(tr.runCtx, false)
	if err != nil {
		return fmt.Errorf("presence: %s: %w", st.Name, err)
	}
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("presence: load %s: %w", st.Name, ctx.Err())
	}
}

// now is the tracker's clock.
func (tr *Tracker) now() time.Time { return tr.cfg.Clock.Now() }

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
func (tr *Tracker) followNodes(ctx context.Context, fresh bool) (<-chan struct{}, error) {
	seen := make(map[string]bool) // owned by the watcher goroutine
	loaded := make(chan struct{})
	err := tr.watchKV(ctx, tr.nodesKV, func(e jetstream.KeyValueEntry, live bool) {
		if !live {
			seen[e.Key()] = true
		}
		tr.onNode(e, live)
	}, func() {
		if fresh {
			tr.forgetNodesBut(seen)
		}
		close(loaded)
	})
	return loaded, err
}

// Stop ends presence upkeep at shutdown: no more records from this node,
// and its liveness entry goes, so the other nodes take over its devices'
// grace. The devices' entries stay for them. Work under way ends with the
// run context; the tasks that ran it are the spawner's to wait for.
func (tr *Tracker) Stop(ctx context.Context) {
	defer tr.cancel()
	tr.mu.Lock()
	tr.stopped = true
	for _, ld := range tr.local {
		if ld.grace != nil {
			ld.grace.Stop()
		}
	}
	tr.mu.Unlock()
	if !tr.cfg.Conn.IsConnected() {
		return // the entry expires by itself
	}
	if err := tr.nodesKV.Delete(ctx, tr.cfg.NodeID); err != nil {
		tr.log.Warn("node liveness entry not removed", "err", err)
	}
}
