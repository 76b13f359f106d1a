package hub

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// watchSet holds the node's NATS interest in device records: one queue
// subscription per (selector, topic) that a local session watches,
// reference-counted by sessions, on a watch pattern (subjects.WatchAll,
// WatchGroup, WatchType, WatchDevice). Every subscription uses the same
// queue name, unique to this node, so that NATS hands the node each record
// once even when several of its patterns match it (a group, a device of
// that group, everything); subIndex.deliver then reaches each local
// session once. A node whose sessions watch nothing receives no record.
//
// A subscription whose last watcher left lingers, then is drained
// (watchLinger, drainIdle): records NATS routed to it still arrive.
//
// Every subscription delivers into one channel, in the order the server
// sent the messages (a device's records are published by one connection,
// so they arrive in order). The mover hands each message to the lane of
// its device, so one device's records are dispatched in order by one
// worker, whichever subscription carried them.
type watchSet struct {
	srv    *Server
	queue  string
	in     chan *nats.Msg   // what nats.go delivers, for every watch subscription
	lanes  []chan *nats.Msg // bounded; a full lane drops (reason "backlog")
	linger time.Duration    // how long a subscription outlives its last watcher
	done   chan struct{}    // closed by stop: ends the sweeper
	wg     sync.WaitGroup

	mu       sync.Mutex
	subs     map[watchKey]*watchSub // Guarded by mu.
	draining []*nats.Subscription   // unsubscribed, still delivering what was routed to them. Guarded by mu.
	drained  int                    // subscriptions drained so far. Guarded by mu.
	stopped  bool                   // Guarded by mu.
}

// watchKey is one watch selector ("all", "group:g", "type:t", "sn:x", or
// "gtype:g.t" for the devices of type t in group g; see watchSelectors)
// and one record topic.
type watchKey struct {
	sel   string
	topic topic
}

type watchSub struct {
	refs    int // 0: lingering, drained by the sweeper once idle for the linger
	idle    time.Time
	sub     *nats.Subscription
	dropped int // what nats.go dropped for it, as counted so far
}

// watchLinger is how long a watch subscription outlives its last watcher.
// The NATS server routes a message by a match it may have made a moment
// before a subscription change (its per-connection routing cache), so a
// record can still be on its way to a subscription just left; while the
// subscription lingers, that record arrives and is dispatched to whoever
// still watches it through another selector. A selector left and taken
// again within the linger (a dashboard switching views) reuses the
// subscription.
const watchLinger = 2 * time.Second

// watchTopics are the topics that come as records on watch subjects.
var watchTopics = [...]struct {
	t    topic
	name string
}{{topicStatus, subjects.WatchStatus}, {topicEvent, subjects.WatchEvent}, {topicPresence, subjects.WatchPresence}}

func newWatchSet(srv *Server) *watchSet {
	w := &watchSet{
		srv:    srv,
		queue:  "node." + nuid.Next(),
		in:     make(chan *nats.Msg, srv.cfg.DispatchQueue),
		lanes:  make([]chan *nats.Msg, srv.cfg.DispatchShards),
		linger: watchLinger,
		done:   make(chan struct{}),
		subs:   make(map[watchKey]*watchSub),
	}
	for i := range w.lanes {
		w.lanes[i] = make(chan *nats.Msg, srv.cfg.DispatchBacklog)
	}
	return w
}

// start runs the mover, one worker per lane and the sweeper, until stop.
func (w *watchSet) start() {
	w.wg.Add(2 + len(w.lanes))
	go func() {
		defer w.wg.Done()
		w.move()
	}()
	go func() {
		defer w.wg.Done()
		w.sweep()
	}()
	for _, lane := range w.lanes {
		go func() {
			defer w.wg.Done()
			for m := range lane {
				w.srv.onWatch(m)
			}
		}()
	}
}

// move hands each message to its device's lane without waiting: a lane
// that is full drops the message and counts it, so one flooded lane never
// holds up the others or nats.go's reader.
func (w *watchSet) move() {
	defer func() {
		for _, lane := range w.lanes {
			close(lane)
		}
	}()
	for m := range w.in {
		select {
		case w.lanes[w.lane(m.Subject)] <- m:
		default:
			w.srv.dropPush(dropBacklog, m.Subject, errBacklogFull)
		}
	}
}

// lane picks a lane by the subject's serial number token (the fifth), so
// that one device always goes to the same lane.
func (w *watchSet) lane(subject string) int {
	key := subject
	toks := strings.SplitN(subject, ".", 6)
	if len(toks) == 6 {
		key = toks[4]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(len(w.lanes)))
}

// topicRecords stands for every record topic in the key of a device
// selector: a device's status, events and presence come through one
// subscription (hub.watch.*.*.<sn>.*), counted once per topic a session
// takes, so that a dashboard subscribing to 1,000 devices makes 1,000
// subscriptions rather than 3,000. deliver gives a session only the
// topics it asked for.
const topicRecords = topicPresence | topicStatus | topicEvent

// keyOf is the key of the subscription that carries topic t under sel.
func keyOf(sel string, t topic) watchKey {
	if strings.HasPrefix(sel, "sn:") {
		return watchKey{sel, topicRecords}
	}
	return watchKey{sel, t}
}

// watchPattern is the watch pattern of a selector and topic (topicRecords:
// every record topic of a device).
func watchPattern(sel string, t topic) (string, error) {
	if t == topicRecords {
		sn, ok := strings.CutPrefix(sel, "sn:")
		if !ok {
			return "", fmt.Errorf("hub: no watch pattern of every topic for selector %q", sel)
		}
		return subjects.WatchDeviceRecords(sn)
	}
	name := ""
	for _, wt := range watchTopics {
		if wt.t == t {
			name = wt.name
		}
	}
	kind, value, _ := strings.Cut(sel, ":")
	switch kind {
	case "all":
		return subjects.WatchAll(name)
	case "group":
		return subjects.WatchGroup(value, name)
	case "type":
		return subjects.WatchType(value, name)
	case "sn":
		return subjects.WatchDevice(value, name)
	case "gtype":
		group, typ, _ := strings.Cut(value, ".")
		return subjects.WatchGroupType(group, typ, name)
	}
	return "", fmt.Errorf("hub: no watch pattern for selector %q", sel)
}

// ref adds one watcher of sel for topic t, subscribing when there is no
// subscription (not even a lingering one). nats.go's subscribe only
// buffers the SUB: it does not block.
func (w *watchSet) ref(sel string, t topic) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return fmt.Errorf("hub: watch %s: %w", sel, ErrClosed)
	}
	k := keyOf(sel, t)
	if e := w.subs[k]; e != nil {
		e.refs++
		return nil
	}
	pattern, err := watchPattern(k.sel, k.topic)
	if err != nil {
		return err
	}
	sub, err := w.srv.nc.ChanQueueSubscribe(pattern, w.queue, w.in)
	if err != nil {
		return fmt.Errorf("hub: watch %s: %w", pattern, err)
	}
	w.subs[k] = &watchSub{refs: 1, sub: sub}
	w.srv.metrics.interests.Inc()
	return nil
}

// unref removes one watcher of sel for topic t. The subscription lingers
// (watchLinger), then the sweeper drains it.
func (w *watchSet) unref(sel string, t topic) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.subs[keyOf(sel, t)]; e != nil && e.refs > 0 {
		if e.refs--; e.refs == 0 {
			e.idle = time.Now()
		}
	}
}

// sweep drains, every half linger, the subscriptions no watcher has taken
// again within the linger, until stop.
func (w *watchSet) sweep() {
	tick := time.NewTicker(w.linger / 2)
	defer tick.Stop()
	for {
		select {
		case <-w.done:
			return
		case now := <-tick.C:
			w.drainIdle(now)
		}
	}
}

// drainIdle ends the subscriptions idle for the linger by draining them
// rather than cutting them: what NATS routed to one before the server saw
// the unsubscribe still arrives and is dispatched.
func (w *watchSet) drainIdle(now time.Time) {
	type dropped struct {
		subject string
		n       int
	}
	var drops []dropped
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	for k, e := range w.subs {
		if e.refs > 0 || now.Sub(e.idle) < w.linger {
			continue
		}
		delete(w.subs, k)
		w.srv.metrics.interests.Dec()
		if n := w.countDropped(e); n > 0 {
			drops = append(drops, dropped{e.sub.Subject, n})
		}
		w.drained++
		if err := e.sub.Drain(); err != nil {
			_ = e.sub.Unsubscribe()
			continue
		}
		w.draining = append(w.draining, e.sub)
	}
	// Forget the drains that have completed, so the list stays short.
	live := w.draining[:0]
	for _, s := range w.draining {
		if s.IsValid() {
			live = append(live, s)
		}
	}
	clear(w.draining[len(live):])
	w.draining = live
	w.mu.Unlock()
	for _, d := range drops {
		w.warnDropped(d.subject, d.n)
	}
}

// stop ends every watch subscription (drains too), then the mover and the
// workers, once they have dispatched what had arrived.
func (w *watchSet) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	dropped := 0
	for _, e := range w.subs {
		dropped += w.countDropped(e)
		_ = e.sub.Unsubscribe()
	}
	for _, s := range w.draining {
		_ = s.Unsubscribe()
	}
	w.draining = nil
	w.mu.Unlock()
	if dropped > 0 {
		w.warnDropped("", dropped)
	}
	close(w.done)
	// No subscription is left, so nats.go sends nothing more on in.
	close(w.in)
	w.wg.Wait()
}

// countDropped counts what nats.go dropped for a subscription because the
// channel was full (reason "overflow"), and returns how many since the
// last count. Called with w.mu held; the caller warns once it is released.
func (w *watchSet) countDropped(e *watchSub) int {
	n, err := e.sub.Dropped()
	if err != nil {
		return 0
	}
	delta := n - e.dropped
	e.dropped = n
	if delta > 0 {
		w.srv.metrics.pushesDropped.WithLabelValues(dropOverflow).Add(float64(delta))
	}
	return max(delta, 0)
}

func (w *watchSet) warnDropped(subject string, n int) {
	w.srv.warnLimited("watch overflow: records dropped before dispatch", "subject", subject, "dropped", n)
}

// onSlowConsumer counts what nats.go dropped for sub, when it is one of the
// watch subscriptions; it reports whether it was.
func (w *watchSet) onSlowConsumer(sub *nats.Subscription) bool {
	if sub.Queue != w.queue {
		return false
	}
	w.mu.Lock()
	dropped := 0
	for _, e := range w.subs {
		if e.sub == sub {
			dropped += w.countDropped(e)
		}
	}
	w.mu.Unlock()
	if dropped > 0 {
		w.warnDropped(sub.Subject, dropped)
	}
	return true
}

// size is how many watch subscriptions the node holds, lingering ones
// included.
func (w *watchSet) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.subs)
}

// publishWatch publishes a stored record of topic (subjects.WatchStatus,
// WatchEvent or WatchPresence) of device sn on its watch subject, for the
// nodes whose sessions watch it. Call it only once the record is stored
// (acknowledged): a watcher never sees a record the stream refused.
func (srv *Server) publishWatch(topic, group, typ, sn string, body []byte) {
	srv.publishWatchID(topic, group, typ, sn, "", body)
}

// recordPushID is the push id of a record of kind ('e' event, 'p'
// presence) stored at seq in the node's own stream: "e<seq>", and in
// data-centre mode "e<seq>-<dc>", since every data centre's own stream
// counts from 1 and push ids are unique.
func (srv *Server) recordPushID(kind byte, seq uint64) string {
	id := string(kind) + strconv.FormatUint(seq, 10)
	if srv.layout.DCMode() {
		id += "-" + srv.layout.DC
	}
	return id
}

// publishWatchID is publishWatch with the push id every node gives the
// record (schema.HeaderPushID), when id is not empty.
func (srv *Server) publishWatchID(topic, group, typ, sn, id string, body []byte) {
	subj, err := subjects.Watch(group, typ, sn, topic)
	if err != nil {
		srv.warnLimited("record not published for watchers", "topic", topic, "err", err)
		return
	}
	m := nats.NewMsg(subj)
	m.Data = body
	if id != "" {
		m.Header.Set(schema.HeaderPushID, id)
	}
	// A core publish only buffers; with the connection down it fails, and
	// watchers miss the live copy of a record that is stored all the same.
	if err := srv.nc.PublishMsg(m); err != nil {
		srv.warnLimited("record not published for watchers", "subject", subj, "err", err)
	}
}

// onWatch dispatches one record that arrived on a watch subject to the
// local sessions that watch it. The record is checked as strictly as one
// read from its stream, and must be the one its subject names; any other
// is dropped and counted (reason "invalid_record").
func (srv *Server) onWatch(m *nats.Msg) {
	_, _, _, topicName, err := subjects.ParseWatch(m.Subject)
	if err != nil {
		srv.metrics.pushesDropped.WithLabelValues(dropInvalidRecord).Inc()
		return
	}
	id := m.Header.Get(schema.HeaderPushID)
	if len(id) > 128 {
		id = ""
	}
	if id == "" {
		id = nuid.Next()
	}
	switch topicName {
	case subjects.WatchStatus:
		var rec StatusRecord
		if json.Unmarshal(m.Data, &rec) != nil || !validStatus(&rec) || !onSubject(m.Subject, rec.Group, rec.Type, rec.SN, topicName) {
			break
		}
		srv.coalescer.offer(rec.SN, rec.Type, rec.Group, m.Data)
		return
	case subjects.WatchEvent:
		var rec EventRecord
		if json.Unmarshal(m.Data, &rec) != nil || !validEvent(&rec) || !onSubject(m.Subject, rec.Group, rec.Type, rec.SN, topicName) {
			break
		}
		srv.subs.deliver(topicEvent, priorities[rec.Priority], rec.SN, rec.Type, rec.Group, "/push/event", id, m.Data)
		return
	case subjects.WatchPresence:
		var rec PresenceRecord
		if json.Unmarshal(m.Data, &rec) != nil || !validPresence(&rec) || !onSubject(m.Subject, rec.Group, rec.Type, rec.SN, topicName) {
			break
		}
		srv.subs.deliver(topicPresence, 0, rec.SN, rec.Type, rec.Group, "/push/presence", id, m.Data)
		return
	}
	srv.metrics.pushesDropped.WithLabelValues(dropInvalidRecord).Inc()
}

// onSubject reports whether subject is the watch subject of a record of
// that group, type and device: a record routed by one group or type but
// naming another would reach watchers it was not routed to.
func onSubject(subject, group, typ, sn, topic string) bool {
	want, err := subjects.Watch(group, typ, sn, topic)
	return err == nil && want == subject
}
