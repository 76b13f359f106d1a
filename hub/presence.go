package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fleethub/fleethub/auth"
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
	since    int64
	lastSeen time.Time
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

// onNode follows hub_nodes. A node whose entry goes away, removed at its
// shutdown or expired after its death, is lost: its devices go offline
// after the grace, counted from when it was last seen alive.
func (p *presence) onNode(e jetstream.KeyValueEntry, live bool) {
	id := e.Key()
	if e.Operation() == jetstream.KeyValuePut {
		var ne NodeEntry
		_ = json.Unmarshal(e.Value(), &ne)
		p.mu.Lock()
		p.nodes[id] = nodeView{since: ne.Since, lastSeen: e.Created()}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	nv, known := p.nodes[id]
	delete(p.nodes, id)
	p.mu.Unlock()
	if !live || id == p.srv.cfg.NodeID {
		return
	}
	// Removed at shutdown: its sessions closed just now. Expired: they
	// died with the node, around its last refresh.
	deadline := p.srv.cfg.Now().Add(p.srv.cfg.OfflineGrace)
	if e.Operation() == jetstream.KeyValuePurge && known {
		deadline = nv.lastSeen.Add(p.srv.cfg.OfflineGrace)
	}
	p.srv.log.Warn("node lost", "lost", id, "expired", e.Operation() == jetstream.KeyValuePurge)
	p.afterDeadline(deadline, func() { p.nodeLost(id) })
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

// onEntry follows hub_presence.
func (p *presence) onEntry(e jetstream.KeyValueEntry, live bool) {
	sn := e.Key()
	if e.Operation() == jetstream.KeyValuePut {
		if p.refreshed(sn, e.Value(), e.Revision()) {
			return
		}
		var pe PresenceEntry
		if err := json.Unmarshal(e.Value(), &pe); err != nil {
			return
		}
		p.mu.Lock()
		// Nodes, types and groups are few: one copy of each name.
		pe.Node, pe.Type, pe.Group = p.intern(pe.Node), p.intern(pe.Type), p.intern(pe.Group)
		v := p.viewLocked(sn)
		v.entry = &pe
		v.tookLocked(pe.Session, e.Revision())
		v.lastSeen = max(v.lastSeen, pe.LastSeen)
		if pe.Type != "" {
			v.typ, v.group = pe.Type, pe.Group
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	v := p.viewLocked(sn)
	old := v.entry
	v.entry = nil
	if old != nil && v.offlineSince < old.Since {
		// The offline record normally comes first; until it does, the
		// removal is the best time there is.
		v.offlineSince = p.srv.cfg.Now().UnixMilli()
	}
	coordinator := p.isCoordinatorLocked()
	ld := p.local[sn]
	held := ld != nil && !ld.gone && !p.stopped
	p.mu.Unlock()
	if held && live {
		// The entry of a device connected here went away (it expired while
		// this node was cut off, or another node took this node for lost):
		// put it back.
		p.srv.goTask(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.repair(ctx, sn, ld)
		})
		return
	}
	// An entry that expired is the last resort: no node refreshed it, so
	// the node that held it is gone and nobody reported the device. The
	// coordinator does, once (the record's id de-duplicates).
	if live && e.Operation() == jetstream.KeyValuePurge && old != nil && coordinator {
		p.srv.goTask(func() { p.publishOffline(sn, old, ReasonNodeLost) })
	}
}

// refreshed handles the common put, a refresh: the entry as the view has
// it but for last_seen. It reads only last_seen, with no JSON decoding, and
// takes the put for a refresh only if it is byte for byte that entry.
func (p *presence) refreshed(sn string, value []byte, rev uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view[sn]
	if v == nil || v.entry == nil {
		return false
	}
	// {"node":"<node>","session":"<session>",...: compared piece by piece,
	// without building the prefix.
	rest := value
	for _, piece := range [...]string{`{"node":"`, v.entry.Node, `","session":"`, v.entry.Session, `",`} {
		var ok bool
		if rest, ok = cutPrefix(rest, piece); !ok {
			return false
		}
	}
	i := bytes.Index(value, lastSeenKey)
	if i < 0 {
		return false
	}
	i += len(lastSeenKey)
	var ls int64
	j := i
	for ; j < len(value) && value[j] >= '0' && value[j] <= '9' && j-i < 18; j++ {
		ls = ls*10 + int64(value[j]-'0')
	}
	if j == i {
		return false
	}
	// A refresh is exactly the entry this node would write with that
	// last_seen; anything else (another field changed, a longer number,
	// bytes after it) is decoded in full, as any other put.
	e := *v.entry
	e.LastSeen = ls
	var buf [256]byte
	if !bytes.Equal(appendPresenceEntry(buf[:0], &e), value) {
		return false
	}
	// Readers copy the entry's fields under p.mu, so it is updated in place.
	v.entry.LastSeen = ls
	v.lastSeen = max(v.lastSeen, ls)
	v.tookLocked(v.entry.Session, rev)
	return true
}

// tookLocked records the revision of a write of the entry of session,
// when that is the device's session here: its next refresh checks against
// it. Caller holds presence.mu.
func (v *deviceView) tookLocked(session string, rev uint64) {
	if ld := v.local; ld != nil && ld.session == session && rev > ld.rev {
		ld.rev = rev
	}
}

// dropLocked forgets a local device session: its entry is no longer this
// node's to refresh. Caller holds p.mu.
func (p *presence) dropLocked(sn string, ld *localDevice) {
	ld.dropped = true
	if p.local[sn] == ld {
		delete(p.local, sn)
	}
	if v := p.view[sn]; v != nil && v.local == ld {
		v.local = nil
	}
}

// cutPrefix reports whether b starts with s (compared without allocating)
// and returns the rest.
func cutPrefix(b []byte, s string) ([]byte, bool) {
	if len(b) < len(s) || string(b[:len(s)]) != s {
		return b, false
	}
	return b[len(s):], true
}

var lastSeenKey = []byte(`"last_seen":`)

// intern returns the view's copy of a low-cardinality name. Caller holds
// p.mu.
func (p *presence) intern(name string) string {
	if x, ok := p.names[name]; ok {
		return x
	}
	if len(p.names) < 10000 {
		p.names[name] = name
	}
	return name
}

// viewLocked returns the device's view, creating it. Caller holds p.mu.
func (p *presence) viewLocked(sn string) *deviceView {
	v := p.view[sn]
	if v == nil {
		v = &deviceView{}
		p.view[sn] = v
	}
	return v
}

// onRecord follows the HUB_PRESENCE stream: the view learns when a device
// went offline, and subscribed sessions get /push/presence.
func (p *presence) onRecord(data []byte, seq uint64) {
	var r PresenceRecord
	if err := json.Unmarshal(data, &r); err != nil || !r.valid() {
		p.srv.metrics.pushesDropped.WithLabelValues("invalid_record").Inc()
		return
	}
	p.mu.Lock()
	v := p.viewLocked(r.SN)
	if r.Type != "" {
		v.typ, v.group = r.Type, r.Group
	}
	if !r.Online {
		v.offlineSince = r.At
	}
	caught := p.caught
	p.mu.Unlock()
	p.srv.metrics.presence.WithLabelValues(string(r.Reason)).Inc()
	if caught {
		p.srv.subs.deliver(topicPresence, 0, r.SN, r.Type, r.Group, "/push/presence", fmt.Sprintf("p%d", seq), data)
	}
}

// valid reports whether a record read back from HUB_PRESENCE is one a hub
// could have stored: any writer of the stream may store others, and those
// neither change the view nor reach admins (nor add a reason label).
func (r *PresenceRecord) valid() bool {
	switch r.Reason {
	case ReasonConnected, ReasonNodeLost, ReasonClosed, ReasonTimeout, ReasonReplaced, ReasonKicked:
		return auth.ValidSerial(r.SN)
	}
	return false
}

// connected records a device session that has just authenticated. It
// creates the device's entry (publishing a connected record) or, when the
// entry exists (the device is back within its grace, or replaces a session
// elsewhere), overwrites it without a record.
func (p *presence) connected(ctx context.Context, s *Session) error {
	id := s.Identity()
	now := p.srv.cfg.Now()
	entry := PresenceEntry{
		Node: p.srv.cfg.NodeID, Session: s.id, Since: now.UnixMilli(), LastSeen: now.UnixMilli(),
		Addr: s.remote, Type: id.Type, Group: id.Group,
	}
	b, _ := json.Marshal(entry)
	rev, err := p.kv.Create(ctx, id.SN, b)
	created := err == nil
	if errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = p.kv.Put(ctx, id.SN, b)
	}
	if err != nil {
		return fmt.Errorf("hub: presence of %s: %w", id.SN, err)
	}
	p.mu.Lock()
	if old := p.local[id.SN]; old != nil {
		if old.grace != nil {
			old.grace.Stop()
		}
		p.dropLocked(id.SN, old)
	}
	// Pretend the last write was up to a whole interval earlier than it
	// was, so that the refreshes of devices that connected together spread
	// evenly over the interval, this cycle and every later one.
	every := refreshAfter(p.srv.cfg.PresenceTTL)
	jitter := time.Duration(rand.Int64N(int64(every) + 1))
	ld := &localDevice{session: s.id, rev: rev, since: entry.Since, id: id, addr: s.remote}
	p.local[id.SN] = ld
	p.viewLocked(id.SN).local = ld
	p.due.push(dueItem{at: now.Add(every - jitter).UnixNano(), ld: ld})
	p.mu.Unlock()
	if created {
		p.publish(ctx, PresenceRecord{SN: id.SN, Type: id.Type, Group: id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: now.UnixMilli()}, s.id+"/on")
	}
	return nil
}

// disconnected starts the grace of a device session that ended. A replaced
// session has no grace: the newer one owns the entry.
func (p *presence) disconnected(s *Session, reason Reason) {
	id := s.Identity()
	p.mu.Lock()
	defer p.mu.Unlock()
	ld := p.local[id.SN]
	if ld == nil || ld.session != s.id || p.stopped {
		return
	}
	if reason == ReasonReplaced {
		p.dropLocked(id.SN, ld)
		return
	}
	ld.gone = true
	sn, session := id.SN, s.id
	ld.grace = time.AfterFunc(p.srv.cfg.OfflineGrace, func() {
		p.srv.goTask(func() { p.expire(sn, session, reason) })
	})
}

// expire reports a device offline if its entry still names session:
// the record first, then the entry's removal, checked against the revision
// that was read (see presence).
func (p *presence) expire(sn, session string, reason Reason) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.mu.Lock()
	if ld := p.local[sn]; ld != nil && ld.session == session {
		p.dropLocked(sn, ld)
	}
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		return
	}
	e, err := p.kv.Get(ctx, sn)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			p.srv.log.Error("presence read failed", "sn", sn, "err", err)
		}
		return
	}
	var pe PresenceEntry
	if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != session {
		return // the device is back, on a newer session
	}
	p.publishOffline(sn, &pe, reason)
	err = p.kv.Delete(ctx, sn, jetstream.LastRevision(e.Revision()))
	if err == nil {
		return
	}
	// The device came back between the read and the removal: say so.
	cur, gerr := p.kv.Get(ctx, sn)
	if gerr != nil {
		return
	}
	var back PresenceEntry
	if json.Unmarshal(cur.Value(), &back) == nil {
		p.publish(ctx, PresenceRecord{SN: sn, Type: back.Type, Group: back.Group, Online: true, Reason: ReasonConnected, Node: back.Node, At: p.srv.cfg.Now().UnixMilli()}, back.Session+"/on")
	}
}

func (p *presence) publishOffline(sn string, pe *PresenceEntry, reason Reason) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.publish(ctx, PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: false, Reason: reason, Node: pe.Node, At: p.srv.cfg.Now().UnixMilli()}, pe.Session+"/off")
}

// publish stores a record in HUB_PRESENCE (which also delivers it on
// hub.presence.<sn>). msgID de-duplicates it within the stream's window.
func (p *presence) publish(ctx context.Context, r PresenceRecord, msgID string) {
	subj, err := subjects.Presence(r.SN)
	if err != nil {
		return
	}
	b, _ := json.Marshal(r)
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, r.SN+"/"+msgID)
	if _, err := p.srv.js.PublishMsg(ctx, m); err != nil {
		p.srv.log.Error("presence record not stored", "sn", r.SN, "online", r.Online, "reason", r.Reason, "err", err)
	}
}

// upkeep refreshes this node's liveness entry every third of the node TTL
// and each local device's entry shortly before its presence TTL, in small
// asynchronous batches spread over time: its cost grows with the devices,
// not with how often they ping.
func (p *presence) upkeep(ctx context.Context) {
	beat := time.NewTicker(p.srv.cfg.NodeTTL / 3)
	defer beat.Stop()
	// Sweeps every second, or more often when a short TTL leaves less
	// margin than that.
	sweep := time.NewTicker(min(time.Second, refreshAfter(p.srv.cfg.PresenceTTL)/4))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			hctx, cancel := context.WithTimeout(ctx, p.srv.cfg.NodeTTL/3)
			if err := p.heartbeat(hctx); err != nil {
				p.srv.log.Warn("node liveness not refreshed", "err", err)
			}
			cancel()
		case <-sweep.C:
			p.refresh()
		}
	}
}

func (p *presence) heartbeat(ctx context.Context) error {
	b, _ := json.Marshal(NodeEntry{Addr: p.srv.cfg.NodeAddr, Since: p.started.UnixMilli(), Sessions: p.srv.SessionCount()})
	_, err := p.nodesKV.Put(ctx, p.srv.cfg.NodeID, b)
	return err
}

// maxRefreshPerSweep bounds one sweep's writes; at one sweep a second it
// keeps 400,000 devices refreshed at the default two-minute TTL.
const maxRefreshPerSweep = 4000

// refreshAfter is how long after its last write an entry is refreshed:
// the TTL less a margin for a late sweep or a slow write (a tenth of the
// TTL, at least a third of it or 3 s for short test TTLs). At the default
// 2m TTL an entry is written every 108 s.
func refreshAfter(ttl time.Duration) time.Duration {
	return ttl - max(ttl/10, min(ttl/3, 3*time.Second))
}

// refresh rewrites the entries due for it, each only if it is still the
// one this node wrote (a compare-and-set on its revision), asynchronously.
// Entries fall due spread out: connected gives each a random first
// refresh within the interval (see connected), so devices that connected
// together do not refresh together. A write that could not be sent is
// tried again a second later.
func (p *presence) refresh() {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	now := p.srv.cfg.Now()
	next := now.Add(refreshAfter(p.srv.cfg.PresenceTTL)).UnixNano()
	nowMs, nowNs := now.UnixMilli(), now.UnixNano()
	enc := &p.enc
	enc.buf, enc.ends, enc.revs, enc.lds = enc.buf[:0], enc.ends[:0], enc.revs[:0], enc.lds[:0]
	p.mu.Lock()
	// Only the entries due are touched: the queue is ordered by refresh
	// time, so a sweep costs what it writes, not what the node holds. The
	// entries are encoded into one buffer, with no allocation per entry.
	for len(p.due) > 0 && p.due[0].at <= nowNs && len(enc.ends) < maxRefreshPerSweep {
		ld := p.due[0].ld
		p.due.pop()
		if ld.dropped || ld.gone {
			continue // ended or replaced since it was queued
		}
		e := p.entryOf(ld, nowMs)
		enc.buf = appendPresenceEntry(enc.buf, &e)
		enc.ends = append(enc.ends, len(enc.buf))
		enc.revs = append(enc.revs, ld.rev)
		enc.lds = append(enc.lds, ld)
	}
	p.mu.Unlock()
	// Published without waiting for acknowledgements: the bucket checks
	// each write against the revision it names, and this node learns the
	// new revision from its own watcher (see refreshed), as every node
	// learns of every write. A write the bucket refuses means the entry
	// changed (the watcher says how) or is gone (the watcher sees the
	// removal, and the entry is put back).
	m := &enc.msg
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	rev, vals := make([]byte, 0, 20), []string{""}
	m.Header[jetstream.ExpectedLastSubjSeqHeader] = vals
	from, sent := 0, 0
	for i, end := range enc.ends {
		m.Subject = presenceSubjectPrefix + enc.lds[i].id.SN
		m.Data = enc.buf[from:end]
		from = end
		vals[0] = string(strconv.AppendUint(rev[:0], enc.revs[i], 10))
		if err := p.srv.nc.PublishMsg(m); err != nil {
			p.srv.log.Warn("presence refreshes not sent, trying again in a second", "err", err, "entries", len(enc.ends)-i)
			break
		}
		sent++
	}
	m.Data = nil
	retry := now.Add(time.Second).UnixNano()
	p.mu.Lock()
	for i, ld := range enc.lds {
		at := next
		if i >= sent {
			at = retry
		}
		p.due.push(dueItem{at: at, ld: ld})
		enc.lds[i] = nil
	}
	p.mu.Unlock()
	p.srv.metrics.presenceWrites.Add(float64(sent))
}

// reassert runs after a reconnection to NATS. A NATS server that crashed
// may have lost its last writes without any watcher being told (see
// openSoftBucket): the entry of a device that connected just before is
// gone, or this node learned of a revision that the bucket no longer has,
// and every refresh of that entry would fail its revision check until the
// entry expired. Each device held here is read back: a lost entry is
// written again, with no record (nobody saw it go; a removal that was seen
// is put back by repair, with one), and a revision beyond the bucket's
// last is replaced by the entry's own.
func (p *presence) reassert(ctx context.Context) {
	p.mu.Lock()
	held := make([]*localDevice, 0, len(p.local))
	for _, ld := range p.local {
		if !ld.gone {
			held = append(held, ld)
		}
	}
	p.mu.Unlock()
	var revised, rewritten int
	// Reads that fail (NATS is still settling) are tried again, a few
	// times, backing off.
	for attempt := 0; len(held) > 0; attempt++ {
		if attempt > 0 {
			if attempt == 6 {
				p.srv.log.Warn("presence entries not checked after reconnecting", "left", len(held))
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
			}
		}
		if ctx.Err() != nil || !p.srv.nc.IsConnected() {
			return // the next reconnection starts over
		}
		info, err := p.srv.js.Stream(ctx, "KV_"+BucketPresence)
		if err != nil {
			continue
		}
		last := info.CachedInfo().State.LastSeq
		failed := held[:0]
		for _, ld := range held {
			switch p.reassertOne(ctx, ld, last) {
			case reassertRevised:
				revised++
			case reassertRewritten:
				rewritten++
			case reassertFailed:
				failed = append(failed, ld)
			}
		}
		held = failed
	}
	if revised+rewritten > 0 {
		p.srv.log.Warn("presence entries lost by NATS restored", "rewritten", rewritten, "revisions", revised)
	}
}

const (
	reassertKept = iota
	reassertRevised
	reassertRewritten
	reassertFailed
)

func (p *presence) reassertOne(ctx context.Context, ld *localDevice, last uint64) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sn := ld.id.SN
	e, err := p.kv.Get(ctx, sn)
	if err == nil {
		var pe PresenceEntry
		if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != ld.session {
			return reassertKept // another session's: the takeover settles it
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		// A refresh checked against a revision the bucket lost fails, so
		// none can have moved the entry past e meanwhile.
		if !ld.dropped && ld.rev > last {
			ld.rev = e.Revision()
			return reassertRevised
		}
		return reassertKept
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return reassertFailed
	}
	p.mu.Lock()
	v := p.view[sn]
	unseen := !p.stopped && !ld.dropped && !ld.gone && v != nil && v.entry != nil && v.entry.Session == ld.session
	p.mu.Unlock()
	if !unseen {
		return reassertKept
	}
	pe := p.entryOf(ld, p.srv.cfg.Now().UnixMilli())
	rev, err := p.kv.Create(ctx, sn, appendPresenceEntry(nil, &pe))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return reassertKept // written meanwhile, by whichever session
	}
	if err != nil {
		return reassertFailed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ld.dropped {
		ld.rev = rev
	}
	return reassertRewritten
}

// entryOf is the entry this node writes for a device session it holds.
// Since and the rest stay as first written; only last_seen moves.
func (p *presence) entryOf(ld *localDevice, lastSeen int64) PresenceEntry {
	return PresenceEntry{
		Node: p.srv.cfg.NodeID, Session: ld.session, Since: ld.since, LastSeen: lastSeen,
		Addr: ld.addr, Type: ld.id.Type, Group: ld.id.Group,
	}
}

// presenceSubjectPrefix is that of hub_presence's entries.
var presenceSubjectPrefix = subjects.KVKeys(BucketPresence)

// refreshEncoder holds refresh's buffers, kept from sweep to sweep.
type refreshEncoder struct {
	buf  []byte         // the entries, one after the other
	ends []int          // per write: where its entry ends in buf
	revs []uint64       // per write: the revision it replaces
	lds  []*localDevice // per write: whose entry it is
	msg  nats.Msg
}

// appendPresenceEntry appends e as JSON, as encoding/json writes it
// (without its HTML escaping, which JSON readers do not need).
func appendPresenceEntry(b []byte, e *PresenceEntry) []byte {
	b = append(b, `{"node":`...)
	b = appendJSONString(b, e.Node)
	b = append(b, `,"session":`...)
	b = appendJSONString(b, e.Session)
	b = append(b, `,"since":`...)
	b = strconv.AppendInt(b, e.Since, 10)
	b = append(b, `,"last_seen":`...)
	b = strconv.AppendInt(b, e.LastSeen, 10)
	b = append(b, `,"addr":`...)
	b = appendJSONString(b, e.Addr)
	if e.Type != "" {
		b = append(b, `,"type":`...)
		b = appendJSONString(b, e.Type)
	}
	if e.Group != "" {
		b = append(b, `,"group":`...)
		b = appendJSONString(b, e.Group)
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and
// U+2029 escaped, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// dueItem is a local entry's next refresh, at a time in Unix nanoseconds.
type dueItem struct {
	at int64
	ld *localDevice
}

// dueQueue is a min-heap of refreshes by time. Items of devices that ended
// or were replaced stay until they come up, and are skipped then.
type dueQueue []dueItem

func (q *dueQueue) push(it dueItem) {
	*q = append(*q, it)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if h[parent].at <= h[i].at {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

// pop removes the earliest item.
func (q *dueQueue) pop() {
	h := *q
	n := len(h) - 1
	h[0] = h[n]
	h[n] = dueItem{}
	*q = h[:n]
	q.down(0)
}

func (q dueQueue) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(q) {
			return
		}
		least := l
		if r := l + 1; r < len(q) && q[r].at < q[l].at {
			least = r
		}
		if q[i].at <= q[least].at {
			return
		}
		q[i], q[least] = q[least], q[i]
		i = least
	}
}

// repair puts back the entry of a device connected here whose entry went
// away (it expired while this node was cut off from NATS, and was reported
// offline), and reports it connected. If another session holds the entry
// by then, the takeover closes this one instead.
func (p *presence) repair(ctx context.Context, sn string, ld *localDevice) {
	e, err := p.kv.Get(ctx, sn)
	if err == nil {
		var pe PresenceEntry
		if json.Unmarshal(e.Value(), &pe) == nil && pe.Session == ld.session {
			p.mu.Lock()
			ld.rev = e.Revision() // ours after all (a write this node lost track of)
			p.mu.Unlock()
		}
		return
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return
	}
	now := p.srv.cfg.Now()
	b, _ := json.Marshal(PresenceEntry{Node: p.srv.cfg.NodeID, Session: ld.session, Since: now.UnixMilli(), LastSeen: now.UnixMilli(), Addr: ld.addr, Type: ld.id.Type, Group: ld.id.Group})
	rev, err := p.kv.Create(ctx, sn, b)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.local[sn] == ld {
		ld.rev, ld.since = rev, now.UnixMilli()
	}
	p.mu.Unlock()
	p.publish(ctx, PresenceRecord{SN: sn, Type: ld.id.Type, Group: ld.id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: now.UnixMilli()}, ld.session+"/on-"+strconv.FormatInt(now.UnixMilli(), 10))
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

// DeviceView is a device as /admin/devices and snapshots show it.
type DeviceView struct {
	SN       string          `json:"sn"`
	Type     string          `json:"type"`
	Group    string          `json:"group"`
	Online   bool            `json:"online"`
	Node     string          `json:"node"`
	Since    int64           `json:"since"`
	LastSeen int64           `json:"last_seen"`
	Status   json.RawMessage `json:"status"`
	StatusAt *int64          `json:"status_at"`
}

// devices lists the known devices (online, or in the presence history)
// that match, sorted by serial number.
func (p *presence) devices(match func(sn, typ, group string, online bool) bool) []DeviceView {
	p.mu.Lock()
	out := make([]DeviceView, 0, 16)
	for sn, v := range p.view {
		online := v.entry != nil
		if !online && v.offlineSince == 0 {
			continue // only a status so far: not in the presence history
		}
		if !match(sn, v.typ, v.group, online) {
			continue
		}
		dv := DeviceView{SN: sn, Type: v.typ, Group: v.group, Online: online, Since: v.offlineSince, LastSeen: v.lastSeen, Status: json.RawMessage("null")}
		if v.status != nil {
			at := v.statusAt
			dv.Status, dv.StatusAt = v.status, &at
		}
		if online {
			dv.Node, dv.Since = v.entry.Node, v.entry.Since
			dv.LastSeen = max(v.lastSeen, v.entry.LastSeen)
		}
		out = append(out, dv)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].SN < out[j].SN })
	return out
}

// setStatus records a device's last status in the view.
func (p *presence) setStatus(sn, typ, group string, status json.RawMessage, at int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.viewLocked(sn)
	if at < v.statusAt {
		return
	}
	v.status, v.statusAt = status, at
	if v.typ == "" {
		v.typ, v.group = p.intern(typ), p.intern(group)
	}
}

// each calls fn for every device in the view that is known (online, or
// with a presence record) and returns the set it visited.
func (p *presence) each(fn func(sn, typ, group string, online bool)) map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[string]bool, len(p.view))
	for sn, v := range p.view {
		if v.entry == nil && v.offlineSince == 0 {
			continue // only a status so far
		}
		seen[sn] = true
		fn(sn, v.typ, v.group, v.entry != nil)
	}
	return seen
}

// known returns a device's type and group as the view has them.
func (p *presence) known(sn string) (typ, group string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view[sn]
	if v == nil {
		return "", "", false
	}
	return v.typ, v.group, true
}
