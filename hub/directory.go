package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/auth"
	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The device directory. No node follows the whole fleet; one of them,
// elected, keeps a compact sorted index of the known devices (serial
// number, type, group, online, node, since) and the summary counts per
// (group, type), and answers every node's listings and summaries on
// subjects.AllDir. It follows presence records only (one per change, never
// status or refreshes) and the registry: HUB_PRESENCE from each device's
// last record when elected, then every new one; hub_devices the same way.
//
// Election is a lease: the key "directory" of the hub_roles bucket, whose
// entries live NodeTTL. A node creates it (create-only: one succeeds) and
// refreshes it every quarter TTL with a revision compare-and-set; the
// others try the create again every quarter TTL, and at once when they
// see the key deleted: that succeeds once the holder has stopped (it
// deletes the key) or died (the key expires). A
// holder that cannot refresh before its lease would have run out, or finds
// another revision, drops its index and serves no more.

const (
	dirLeaseKey = "directory"
	// dirLoadTimeout bounds loading the index once elected: past it the
	// node gives the lease up, and whoever takes it loads anew.
	dirLoadTimeout = time.Minute
	// dirLoadBatch is how many records the presence consumer pulls at a
	// time: loading a fleet is a stream of small records.
	dirLoadBatch = 4096
	// dirQueue makes one holder answer each request, should two briefly
	// both believe they hold the lease.
	dirQueue = "directory"
)

// directory is this node's part in the directory: a candidate, and while
// it holds the lease, the directory itself.
type directory struct {
	srv *Server
	// refeedCh asks the loop to start the presence feed anew (Refeed);
	// refeeding is set while a refeed runs.
	refeedCh  chan struct{}
	refeeding atomic.Bool
	kv        jetstream.KeyValue // hub_roles
	ttl       time.Duration
	// unavailable counts the directory requests of this node that found no
	// directory able to answer, by reason.
	unavailable *prometheus.CounterVec
	held        prometheus.Gauge

	// Whether HUB_PRESENCE allows direct gets, as last read, and until
	// when to trust it (presenceDirect). Guarded by directMu.
	directMu    sync.Mutex
	direct      bool
	directUntil time.Time

	mu    sync.Mutex
	idx   *dirIndex // while this node holds the lease. Guarded by mu.
	ready bool      // idx is loaded. Guarded by mu.
	// What loading still waits for. Guarded by mu.
	regLoaded, recLoaded bool
}

// Reasons a directory request fails, the labels of unavailable.
const (
	dirNoResponder = "no_directory"
	dirLoading     = "loading"
	dirTimeout     = "timeout"
	dirBadAnswer   = "bad_answer"
)

// dirMetrics are the directory's metrics. They outlive a directory: a
// Start that failed and is tried again opens a new one.
type dirMetrics struct {
	unavailable *prometheus.CounterVec
	held        prometheus.Gauge
}

func newDirMetrics(reg prometheus.Registerer) dirMetrics {
	m := dirMetrics{
		unavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "fleethub", Name: "directory_unavailable_total",
			Help: "Listings and summaries of this node that no directory answered, by reason.",
		}, []string{"reason"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "fleethub", Name: "directory_held", Help: "1 while this node is the device directory, else 0.",
		}),
	}
	for _, r := range []string{dirNoResponder, dirLoading, dirTimeout, dirBadAnswer} {
		m.unavailable.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.unavailable, m.held)
	}
	return m
}

func openDirectory(ctx context.Context, srv *Server) (*directory, error) {
	d := &directory{
		srv: srv, ttl: srv.cfg.NodeTTL, refeedCh: make(chan struct{}, 1),
		unavailable: srv.dirMetrics.unavailable, held: srv.dirMetrics.held,
	}
	if err := d.openBucket(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *directory) openBucket(ctx context.Context) error {
	l := d.srv.layout
	cfg := jetstream.KeyValueConfig{
		Bucket: l.Roles(), Description: "leases of the hub's roles (the device directory)",
		History: 1, TTL: d.ttl, Storage: jetstream.FileStorage, Replicas: d.srv.cfg.Replicas,
		Placement: pres.Placement(l),
	}
	kv, err := jscreate.KeyValue(ctx, d.srv.js, cfg)
	if err != nil {
		return fmt.Errorf("hub: bucket %s: %w", cfg.Bucket, err)
	}
	d.kv = kv
	return nil
}

// dirTerm is one holding of the lease. Owned by run.
type dirTerm struct {
	rev       uint64
	refreshed time.Time
	began     time.Time
	ctx       context.Context // ends with the term
	cancel    context.CancelFunc
	idx       *dirIndex
	sub       *nats.Subscription
	// The streams loaded, by creation time: one created again means a
	// reload.
	presenceCreated, registryCreated time.Time
	// stopFeed ends the term's current presence feed (followPresence).
	// Guarded by directory.mu.
	stopFeed context.CancelFunc
}

// first is the node's first try at the election, at Start: a node that
// wins it loads the index before it serves, within ctx (a fleet's index
// loads in a second or two), so that a hub's first node answers listings
// from its first request. The term, if any, goes on in run.
func (d *directory) first(ctx, runCtx context.Context) *dirTerm {
	t := d.take(runCtx)
	if t == nil {
		return nil
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		d.mu.Lock()
		ready := d.ready
		d.mu.Unlock()
		if ready {
			return t
		}
		select {
		case <-ctx.Done():
			return t // loading goes on; the service says so meanwhile
		case <-tick.C:
		}
	}
}

// run takes part in the election until ctx ends, and is the directory
// while it holds the lease; term is the one first won, if any.
func (d *directory) run(ctx context.Context, term *dirTerm) {
	tick := time.NewTicker(max(d.ttl/4, 50*time.Millisecond))
	defer tick.Stop()
	defer func() {
		if term != nil {
			d.end(term)
			d.resign(ctx, term)
		}
	}()
	// A lease given up is seen at once, so that a directory that stops is
	// replaced without waiting for the next try; one that expires is
	// found by the tries.
	var given <-chan jetstream.KeyValueEntry
	if w, err := d.kv.Watch(ctx, dirLeaseKey, jetstream.UpdatesOnly()); err == nil {
		given = w.Updates()
		defer func() {
			if d.srv.nc.IsConnected() {
				_ = w.Stop()
			}
		}()
	}
	for {
		if term == nil {
			term = d.take(ctx)
		} else if resign, ok := d.keep(ctx, term); !ok {
			d.end(term)
			if resign {
				d.resign(ctx, term)
			}
			term = nil
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				break wait
			case <-d.refeedCh:
				if term != nil {
					d.refeed(term)
				}
			case e, ok := <-given:
				if !ok {
					given = nil
					continue
				}
				if term == nil && e != nil && e.Operation() != jetstream.KeyValuePut {
					break wait
				}
			}
		}
	}
}

// take tries to become the directory, and returns its term if it did.
func (d *directory) take(ctx context.Context) *dirTerm {
	cctx, cancel := context.WithTimeout(ctx, d.ttl/2)
	rev, err := d.kv.Create(cctx, dirLeaseKey, []byte(d.srv.cfg.NodeID))
	cancel()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyExists):
		// Ours all the same when an earlier create that timed out took
		// effect, or this node's previous run held it.
		var ok bool
		if rev, ok = d.ours(ctx); !ok {
			return nil
		}
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrNoStreamResponse):
		d.srv.log.Warn("directory: lease bucket missing, creating it again", "err", err)
		cctx, cancel := context.WithTimeout(ctx, d.ttl)
		_ = d.openBucket(cctx)
		cancel()
		return nil
	default:
		d.srv.warnLimited("directory: lease not taken", "err", err)
		return nil
	}
	now := time.Now()
	t := &dirTerm{rev: rev, refreshed: now, began: now, idx: newDirIndex()}
	t.ctx, t.cancel = context.WithCancel(ctx)
	d.mu.Lock()
	d.idx, d.ready, d.regLoaded, d.recLoaded = t.idx, false, false, false
	d.mu.Unlock()
	d.held.Set(1)
	d.srv.log.Info("directory: elected")
	if err := d.load(t); err != nil {
		d.srv.log.Warn("directory: loading failed; giving the lease up", "err", err)
		d.end(t)
		d.resign(ctx, t)
		return nil
	}
	return t
}

// keep refreshes the lease of t and checks its index; ok false ends the
// term, resign whether the lease should be given up as well (it is still
// ours).
func (d *directory) keep(ctx context.Context, t *dirTerm) (resign, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, d.ttl/4)
	rev, err := d.kv.Update(cctx, dirLeaseKey, []byte(d.srv.cfg.NodeID), t.rev)
	cancel()
	switch {
	case err == nil:
		t.rev, t.refreshed = rev, time.Now()
	case ctx.Err() != nil:
		return true, false
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
		// An earlier refresh that timed out may have taken effect: the
		// lease is still ours if it names this node.
		if rev, ok := d.ours(ctx); ok {
			t.rev, t.refreshed = rev, time.Now()
			break
		}
		d.srv.log.Warn("directory: lease lost to another node")
		return false, false
	default:
		if time.Since(t.refreshed) > d.ttl*3/4 {
			d.srv.log.Warn("directory: lease not refreshed in time; no longer the directory", "err", err)
			return false, false
		}
		return false, true
	}
	d.mu.Lock()
	ready := d.ready
	d.mu.Unlock()
	if !ready && time.Since(t.began) > dirLoadTimeout {
		d.srv.log.Warn("directory: loading took too long; giving the lease up")
		return true, false
	}
	// A stream created again (stores heal it) has other sequences and
	// devices: load again.
	cctx, cancel = context.WithTimeout(ctx, d.ttl/4)
	pc, rc, err := d.created(cctx)
	cancel()
	if err == nil && (!pc.Equal(t.presenceCreated) || !rc.Equal(t.registryCreated)) {
		d.srv.log.Info("directory: a stream was created again; reloading")
		return true, false
	}
	return false, true
}

// ours returns the lease's revision when it names this node (node ids
// are unique in a hub: no other node writes this one's).
func (d *directory) ours(ctx context.Context) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, d.ttl/4)
	defer cancel()
	e, err := d.kv.Get(ctx, dirLeaseKey)
	if err != nil || e.Operation() != jetstream.KeyValuePut || string(e.Value()) != d.srv.cfg.NodeID {
		return 0, false
	}
	return e.Revision(), true
}

// created is when HUB_PRESENCE and the registry's stream were created.
func (d *directory) created(ctx context.Context) (presence, registry time.Time, err error) {
	st, err := d.srv.js.Stream(ctx, StreamPresence)
	if err != nil {
		return presence, registry, err
	}
	rs, err := d.srv.js.Stream(ctx, "KV_"+schema.BucketDevices)
	if err != nil {
		return presence, registry, err
	}
	return st.CachedInfo().Created, rs.CachedInfo().Created, nil
}

// end stops serving t: its feeds stop, and the index goes.
func (d *directory) end(t *dirTerm) {
	t.cancel()
	if t.sub != nil {
		_ = t.sub.Unsubscribe()
	}
	d.mu.Lock()
	if d.idx == t.idx {
		d.idx, d.ready = nil, false
	}
	d.mu.Unlock()
	d.held.Set(0)
}

// resign deletes the lease if it is still t's, so that another node takes
// it at once rather than after the TTL.
func (d *directory) resign(ctx context.Context, t *dirTerm) {
	if !d.srv.nc.IsConnected() {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := d.kv.Delete(cctx, dirLeaseKey, jetstream.LastRevision(t.rev)); err != nil {
		d.srv.log.Debug("directory: lease not given up", "err", err)
	}
}

// load starts the term's feeds (presence records, registry) and its
// service, which answers "loading" until both feeds have caught up.
func (d *directory) load(t *dirTerm) error {
	ctx, cancel := context.WithTimeout(t.ctx, d.ttl)
	defer cancel()
	var err error
	if t.presenceCreated, t.registryCreated, err = d.created(ctx); err != nil {
		return err
	}
	if t.sub, err = d.srv.nc.QueueSubscribe(d.srv.layout.AllDir(), dirQueue, d.serve); err != nil {
		return err
	}
	st, err := d.srv.js.Stream(ctx, StreamPresence)
	if err != nil {
		return err
	}
	if st.CachedInfo().State.Msgs == 0 {
		d.loaded(t.idx, &d.recLoaded)
	}
	if err := d.followPresence(ctx, t); err != nil {
		return err
	}
	return d.srv.watchKV(t.ctx, d.srv.registry.kv, func(e jetstream.KeyValueEntry, live bool) {
		var dev *schema.Device
		if e.Operation() == jetstream.KeyValuePut {
			var v schema.Device
			if json.Unmarshal(e.Value(), &v) != nil || v.Validate() != nil {
				return // the registry logs it
			}
			dev = &v
		}
		d.mu.Lock()
		if d.idx == t.idx {
			t.idx.register(e.Key(), dev)
		}
		d.mu.Unlock()
		if dev == nil && live {
			d.forgetIfPurged(t, e.Key()) // see /admin/forget
		}
	}, func() { d.loaded(t.idx, &d.regLoaded) })
}

// followPresence starts the term's feed of presence records: the last of
// each device, then every new one, into the term's index (records older
// than what the index holds are ignored, so a feed started again loses
// and repeats nothing). The feed ends with the term, or when the next one
// replaces it (refeed).
func (d *directory) followPresence(ctx context.Context, t *dirTerm) error {
	cons, err := d.srv.js.OrderedConsumer(ctx, StreamPresence, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.AllPresence}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		var r PresenceRecord
		if decodePresenceRecord(m.Data(), &r) == nil && validPresence(&r) {
			d.mu.Lock()
			if d.idx == t.idx {
				t.idx.record(&r, meta.Sequence.Stream)
			}
			d.mu.Unlock()
		}
		if meta.NumPending == 0 {
			d.loaded(t.idx, &d.recLoaded)
		}
	}, jetstream.PullMaxMessages(dirLoadBatch))
	if err != nil {
		return err
	}
	fctx, stop := context.WithCancel(t.ctx)
	if !d.srv.goTask(func() {
		<-fctx.Done()
		cc.Stop()
		if t.ctx.Err() == nil {
			// Replaced by the next feed: its consumer goes now, not
			// after the server's inactivity threshold (minutes).
			if info := cons.CachedInfo(); info != nil {
				dctx, cancel := context.WithTimeout(d.srv.runCtx, jscreate.CallTimeout)
				_ = d.srv.js.DeleteConsumer(dctx, StreamPresence, info.Name)
				cancel()
			}
		}
	}) {
		stop()
		cc.Stop()
		return errStopping
	}
	d.mu.Lock()
	prev := t.stopFeed
	t.stopFeed = stop
	d.mu.Unlock()
	if prev != nil {
		prev()
	}
	return nil
}

// Refeed asks the directory, when this node holds it, to start its
// presence feed anew (refeed); it does not wait.
func (d *directory) Refeed() {
	select {
	case d.refeedCh <- struct{}{}:
	default: // one is pending already
	}
}

// refeed starts the presence feed of term t anew, in a task of its own
// (the loop must keep refreshing the lease meanwhile): a data centre that
// came back after a partition has its sources added back on the views,
// but a feed whose consumer lives across the link (a supercluster's view
// in the other data centre) stalled during the cut, and would otherwise
// wait out nats.go's own reset back-off before it follows again. Creating
// the consumer waits for JetStream (in a supercluster, the meta leader an
// election brings back after the heal): it is tried again, with back-off,
// until it succeeds or the term ends. One at a time.
func (d *directory) refeed(t *dirTerm) {
	if !d.refeeding.CompareAndSwap(false, true) {
		return
	}
	if !d.srv.goTask(func() {
		defer d.refeeding.Store(false)
		_, err := jscreate.Wait(t.ctx, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, d.followPresence(ctx, t)
		})
		if err != nil {
			d.srv.warnLimited("directory: presence feed not started again", "err", err)
			return
		}
		d.srv.log.Info("directory: presence feed started again")
	}) {
		d.refeeding.Store(false)
	}
}

// loaded notes that one feed of idx has caught up; with both, the index is
// built and served.
func (d *directory) loaded(idx *dirIndex, flag *bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.idx != idx || *flag {
		return
	}
	*flag = true
	if d.regLoaded && d.recLoaded {
		idx.build()
		d.ready = true
		d.srv.log.Info("directory: loaded", "devices", len(idx.bySN), "listed", len(idx.sorted))
	}
}

// dirListRequest asks for a page of the listing of Filter as a caller
// with Groups sees it.
type dirListRequest struct {
	Filter listFilter `json:"f"`
	Groups []string   `json:"g"`
	After  string     `json:"a,omitempty"`
	Limit  int        `json:"l"`
}

// dirSummaryRequest asks for the counts a caller with Groups may see.
type dirSummaryRequest struct {
	Groups []string `json:"g"`
}

// dirReply is the directory's answer: a failure's code and message, or a
// page (D, More) or a summary (Sum).
type dirReply struct {
	Code int        `json:"code,omitempty"`
	Msg  string     `json:"msg,omitempty"`
	D    []dirEntry `json:"d"`
	More bool       `json:"more,omitempty"`
	Sum  *Summary   `json:"sum,omitempty"`
}

// serve answers a directory request. Answers are bounded: a page holds at
// most maxListLimit devices and fits the connection's payload limit.
// Requests and answers are signed control messages: only a node may ask
// (listings cross group boundaries) and only the directory may answer.
func (d *directory) serve(m *nats.Msg) {
	if !d.srv.controlOK(m, m.Subject, "directory request") {
		return
	}
	respond := func(b []byte) { _ = d.srv.nc.PublishMsg(d.srv.ctl.reply(m, b)) }
	fail := func(code int, msg string) {
		b, _ := json.Marshal(dirReply{Code: code, Msg: msg})
		respond(b)
	}
	switch l := d.srv.layout; m.Subject {
	case l.DirList():
		var req dirListRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			fail(wire.CodeBadRequest, "directory: request is not JSON")
			return
		}
		if req.Limit < 1 || req.Limit > maxListLimit || req.After != "" && !auth.ValidSerial(req.After) {
			fail(wire.CodeBadRequest, "directory: limit or after out of range")
			return
		}
		mt := req.Filter.compile(req.Groups)
		maxBytes := int(d.srv.nc.MaxPayload()) - 1024
		d.mu.Lock()
		idx, ready := d.idx, d.ready
		var body []byte
		if idx != nil && ready {
			body = idx.page(mt, req.After, req.Limit, maxBytes)
		}
		d.mu.Unlock()
		switch {
		case idx == nil:
			fail(wire.CodeUnavailable, "not the directory")
		case !ready:
			fail(wire.CodeUnavailable, "directory loading")
		default:
			respond(body)
		}
	case l.DirSummary():
		var req dirSummaryRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			fail(wire.CodeBadRequest, "directory: request is not JSON")
			return
		}
		d.mu.Lock()
		idx, ready := d.idx, d.ready
		var sum Summary
		if idx != nil && ready {
			sum = idx.summary(req.Groups)
		}
		d.mu.Unlock()
		switch {
		case idx == nil:
			fail(wire.CodeUnavailable, "not the directory")
		case !ready:
			fail(wire.CodeUnavailable, "directory loading")
		default:
			b, _ := json.Marshal(dirReply{Sum: &sum})
			respond(b)
		}
	default:
		fail(wire.CodeNotFound, "directory: unknown request")
	}
}

// dirWait bounds how long a node waits for a directory that is being
// elected or is loading, before it answers 503.
const dirWait = 2 * time.Second

// errNoDirectory answers a listing or summary no directory could serve.
var errNoDirectory = wire.Errorf(wire.CodeUnavailable, "device directory unavailable (being elected or loading); retry later")

// askDirectory sends req to the directory on subj and returns its answer,
// retrying while none answers or it is loading, at most dirWait.
func (srv *Server) askDirectory(ctx context.Context, subj string, req any) (*dirReply, *wire.Error) {
	if srv.busDown() {
		return nil, errBusDown
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "internal error")
	}
	ctx, cancel := context.WithTimeout(ctx, dirWait)
	defer cancel()
	backoff := 10 * time.Millisecond
	reason := dirTimeout // why the last try failed
	for {
		req := srv.ctl.message(subj, data)
		m, err := srv.nc.RequestMsgWithContext(ctx, req)
		switch {
		case err == nil && !srv.controlOK(m, auth.ReplyBinding(req.Header.Get(schema.HeaderSig)), "directory reply"):
			// Not the directory's: try again, the directory's own
			// answer may come.
			reason = dirBadAnswer
		case err == nil:
			var r dirReply
			if err := json.Unmarshal(m.Data, &r); err != nil {
				srv.dir.unavailable.WithLabelValues(dirBadAnswer).Inc()
				return nil, errNoDirectory
			}
			switch r.Code {
			case 0:
				return &r, nil
			case wire.CodeUnavailable:
				reason = dirLoading
			default:
				srv.dir.unavailable.WithLabelValues(dirBadAnswer).Inc()
				srv.warnLimited("directory refused a request", "code", r.Code, "msg", r.Msg)
				return nil, wire.Errorf(wire.CodeInternal, "internal error")
			}
		case errors.Is(err, nats.ErrNoResponders):
			reason = dirNoResponder
		case ctx.Err() == nil: // else the try before says why
			reason = dirTimeout
		}
		select {
		case <-ctx.Done():
			srv.dir.unavailable.WithLabelValues(reason).Inc()
			if reason == dirLoading {
				return nil, wire.Errorf(wire.CodeUnavailable, "device directory loading; retry later")
			}
			return nil, errNoDirectory
		case <-time.After(backoff):
			backoff = min(2*backoff, 200*time.Millisecond)
		}
	}
}
