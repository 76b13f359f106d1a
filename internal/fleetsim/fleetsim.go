// Package fleetsim plays the NATS side of a device fleet held by other
// nodes: N simulated devices spread over K simulated nodes, without a
// socket. It writes what those nodes would write to the bus at the rates
// real devices cause, so that a real hub node on the same NATS can be
// measured under a fleet of 100,000 or 1,000,000 devices:
//
//   - each simulated node's liveness entry in hub_nodes, every NodeTTL/3;
//   - each online device's entry in hub_presence, written at connect and
//     rewritten before PresenceTTL runs out, as the hub does (refreshAfter);
//   - a connected record on hub.presence.<sn> at connect and an offline
//     record (reason closed) when the device leaves, each with a
//     Nats-Msg-Id built as the hub builds it;
//   - status records on hub.dev.<sn>.status every StatusEvery and event
//     records on hub.dev.<sn>.event at EventsPerHour, each device at its own
//     phase, so the load is even over time rather than in bursts;
//   - reconnect churn: ReconnectPerMinute of the devices per minute go
//     offline and come back OfflineFor later.
//
// Everything is driven from one time-ordered schedule (a heap of due
// items) that Run works through on a short tick, so the simulator's own
// cost is what it publishes. JetStream writes are asynchronous, bounded by
// MaxPending in flight.
//
// The simulator writes entries with plain puts and records without the
// hub's compare-and-set on the subject's last sequence: it is the only
// writer for its devices, and what the hub's watchers and consumers see is
// the same.
//
// A real hub node reports node_lost for the devices of a simulated node
// that stops refreshing (StopNode) only if that hub is the coordinator, the
// live node with the smallest id: simulated node ids start with NodePrefix
// ("sim-" by default), which sorts after the usual hub ids.
package fleetsim

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says what fleet to play.
type Config struct {
	// Conn is the NATS connection to publish on. Required.
	Conn *nats.Conn
	// Devices is the number of simulated devices. Required.
	Devices int
	// Nodes is the number of simulated nodes holding them (device i is on
	// node i mod Nodes). Default 1.
	Nodes int
	// NodePrefix and SNPrefix name the simulated nodes and devices
	// (NodePrefix+k, SNPrefix+i). Defaults "sim-" and "SIM-".
	NodePrefix, SNPrefix string
	// Type is the devices' type; Groups the number of groups they are
	// spread over (device i is in group GroupPrefix+(i mod Groups)).
	// Defaults "sim", 10 and "simg".
	Type        string
	Groups      int
	GroupPrefix string
	// PresenceTTL and NodeTTL must be those of the hub whose buckets are
	// written. Defaults 2m and 5s, the hub's.
	PresenceTTL, NodeTTL time.Duration
	// StatusEvery is each device's status period. Default 10s; negative:
	// no status records.
	StatusEvery time.Duration
	// EventsPerHour is each device's event rate. Default 2; negative: no
	// events.
	EventsPerHour float64
	// ReconnectPerMinute is the fraction of devices that go offline per
	// minute, each coming back OfflineFor later. Default 0.01; negative:
	// no churn.
	ReconnectPerMinute float64
	// OfflineFor is how long a churned device stays away. Default 2s.
	OfflineFor time.Duration
	// Ramp is the span over which the devices first connect, evenly.
	// Default 10s.
	Ramp time.Duration
	// CorePublish sends status and event records with core publishes
	// (the streams capture them) instead of acknowledged JetStream
	// publishes.
	CorePublish bool
	// MaxPending bounds the JetStream publishes in flight. Default 4096.
	MaxPending int
	// Tick is how often the schedule is worked through. Default 10ms.
	Tick time.Duration
}

// Errors.
var (
	ErrNoConn    = errors.New("fleetsim: Conn is required")
	ErrNoDevices = errors.New("fleetsim: Devices must be positive")
	ErrRunning   = errors.New("fleetsim: Run was called twice")
)

func (c *Config) setDefaults() {
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	defS := func(p *string, s string) {
		if *p == "" {
			*p = s
		}
	}
	if c.Nodes <= 0 {
		c.Nodes = 1
	}
	if c.Groups <= 0 {
		c.Groups = 10
	}
	defS(&c.NodePrefix, "sim-")
	defS(&c.SNPrefix, "SIM-")
	defS(&c.Type, "sim")
	defS(&c.GroupPrefix, "simg")
	def(&c.PresenceTTL, 2*time.Minute)
	def(&c.NodeTTL, 5*time.Second)
	def(&c.StatusEvery, 10*time.Second)
	def(&c.OfflineFor, 2*time.Second)
	def(&c.Ramp, 10*time.Second)
	def(&c.Tick, 10*time.Millisecond)
	if c.EventsPerHour == 0 {
		c.EventsPerHour = 2
	}
	if c.ReconnectPerMinute == 0 {
		c.ReconnectPerMinute = 0.01
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 4096
	}
}

// RefreshAfter is how long after its last write a presence entry is
// rewritten, as the hub computes it: the TTL less a tenth of it (at least
// a third of it or 3 s for short TTLs).
func RefreshAfter(ttl time.Duration) time.Duration {
	return ttl - max(ttl/10, min(ttl/3, 3*time.Second))
}

// Stats counts what the simulator published. Acked and Failed count the
// JetStream publishes answered so far.
type Stats struct {
	Connects, Disconnects int64 // device sessions started and ended (records published)
	EntryWrites           int64 // hub_presence puts (connects and refreshes)
	EntryDeletes          int64
	NodeWrites            int64 // hub_nodes puts
	Statuses, Events      int64
	PublishErrors         int64 // publishes that could not be sent
	Acked, Failed         int64
}

// Sim is a simulated fleet. Run plays it; Stats and StopNode may be called
// from any goroutine meanwhile.
type Sim struct {
	cfg     Config
	js      jetstream.JetStream
	devs    []device
	nodes   []simNode
	running atomic.Bool
	stopped []atomic.Bool // per node: StopNode was called

	connects, disconnects, entryWrites, entryDeletes atomic.Int64
	nodeWrites, statuses, events, pubErrors          atomic.Int64
	acked, failed                                    atomic.Int64

	// Owned by Run.
	due      dueHeap
	rng      *rand.Rand
	churnAcc float64
	status   json.RawMessage
	evData   json.RawMessage
	started  time.Time
}

type device struct {
	sn, group string
	node      int32
	gen       uint32 // session generation
	online    bool
	since     int64 // ms, the session's start
}

type simNode struct {
	id, addr string
	sessions int
}

// New checks cfg and returns a simulator.
func New(cfg Config) (*Sim, error) {
	if cfg.Conn == nil {
		return nil, ErrNoConn
	}
	if cfg.Devices <= 0 {
		return nil, ErrNoDevices
	}
	cfg.setDefaults()
	s := &Sim{cfg: cfg, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	js, err := jetstream.New(cfg.Conn,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) { s.acked.Add(1) }),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { s.failed.Add(1) }),
	)
	if err != nil {
		return nil, fmt.Errorf("fleetsim: %w", err)
	}
	s.js = js
	s.nodes = make([]simNode, cfg.Nodes)
	s.stopped = make([]atomic.Bool, cfg.Nodes)
	for k := range s.nodes {
		s.nodes[k] = simNode{id: s.NodeID(k), addr: "127.0.0.1:" + strconv.Itoa(20000+k)}
	}
	s.devs = make([]device, cfg.Devices)
	for i := range s.devs {
		s.devs[i] = device{sn: s.SN(i), group: cfg.GroupPrefix + strconv.Itoa(i%cfg.Groups), node: int32(i % cfg.Nodes)}
		if _, err := subjects.Presence(s.devs[i].sn); err != nil {
			return nil, fmt.Errorf("fleetsim: serial %q: %w", s.devs[i].sn, err)
		}
	}
	s.status = json.RawMessage(`{"battery":87,"location":{"code":0,"msg":"ok","x":1.5,"y":2.5},"electricity":{"code":0,"msg":"ok"}}`)
	s.evData = json.RawMessage(`{"detail":"simulated"}`)
	return s, nil
}

// SN is the serial number of device i.
func (s *Sim) SN(i int) string { return s.cfg.SNPrefix + fmt.Sprintf("%07d", i) }

// NodeID is the id of simulated node k.
func (s *Sim) NodeID(k int) string { return s.cfg.NodePrefix + strconv.Itoa(k) }

// NodeOf is the simulated node that holds device i.
func (s *Sim) NodeOf(i int) int { return i % s.cfg.Nodes }

// Group is device i's group.
func (s *Sim) Group(i int) string { return s.cfg.GroupPrefix + strconv.Itoa(i%s.cfg.Groups) }

// Config is the simulator's configuration, defaults filled in.
func (s *Sim) Config() Config { return s.cfg }

// StopNode makes simulated node k die: it stops refreshing its liveness
// entry, and its devices fall silent (no refresh, record or churn), as if
// the process had been killed. Their entries are left for the hub to find.
func (s *Sim) StopNode(k int) { s.stopped[k].Store(true) }

// Stats returns the counters so far.
func (s *Sim) Stats() Stats {
	return Stats{
		Connects: s.connects.Load(), Disconnects: s.disconnects.Load(),
		EntryWrites: s.entryWrites.Load(), EntryDeletes: s.entryDeletes.Load(),
		NodeWrites: s.nodeWrites.Load(), Statuses: s.statuses.Load(), Events: s.events.Load(),
		PublishErrors: s.pubErrors.Load(), Acked: s.acked.Load(), Failed: s.failed.Load(),
	}
}

// Published is the number of messages sent so far, of every kind.
func (st Stats) Published() int64 {
	return st.Connects + st.Disconnects + st.EntryWrites + st.EntryDeletes + st.NodeWrites + st.Statuses + st.Events
}

// Item kinds in the schedule.
const (
	kindConnect uint8 = iota
	kindRefresh
	kindStatus
	kindEvent
)

type dueItem struct {
	at   int64 // unix ns
	dev  int32
	kind uint8
	gen  uint32 // for refresh: the session it belongs to
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func (s *Sim) schedule(it dueItem) { heap.Push(&s.due, it) }

// Run plays the fleet until ctx ends, then waits briefly for the
// publishes in flight and returns ctx's error. It may be called once.
func (s *Sim) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	now := time.Now()
	s.started = now
	n := len(s.devs)
	s.due = make(dueHeap, 0, 3*n)
	base := now.UnixNano()
	for i := range s.devs {
		// Connects spread evenly over the ramp; status and events each at
		// a random phase of their period once connected.
		at := base + int64(s.cfg.Ramp)*int64(i)/int64(n)
		s.due = append(s.due, dueItem{at: at, dev: int32(i), kind: kindConnect})
		if s.cfg.StatusEvery > 0 {
			s.due = append(s.due, dueItem{at: at + s.rng.Int64N(int64(s.cfg.StatusEvery)) + 1, dev: int32(i), kind: kindStatus})
		}
		if every := s.eventEvery(); every > 0 {
			s.due = append(s.due, dueItem{at: at + s.rng.Int64N(int64(every)) + 1, dev: int32(i), kind: kindEvent})
		}
	}
	heap.Init(&s.due)

	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	beat := time.NewTicker(s.cfg.NodeTTL / 3)
	defer beat.Stop()
	s.heartbeat(now)
	last := now
	for {
		select {
		case <-ctx.Done():
			s.drain()
			return ctx.Err()
		case now = <-beat.C:
			s.heartbeat(now)
		case now = <-tick.C:
			s.churn(now, now.Sub(last))
			last = now
			s.work(now)
		}
	}
}

// drain waits a little for the JetStream publishes in flight.
func (s *Sim) drain() {
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(2 * time.Second):
	}
}

func (s *Sim) eventEvery() time.Duration {
	if s.cfg.EventsPerHour <= 0 {
		return 0
	}
	return time.Duration(float64(time.Hour) / s.cfg.EventsPerHour)
}

// work does every item due by now.
func (s *Sim) work(now time.Time) {
	nowNs := now.UnixNano()
	for len(s.due) > 0 && s.due[0].at <= nowNs {
		it := s.due[0]
		d := &s.devs[it.dev]
		dead := s.stopped[d.node].Load()
		switch it.kind {
		case kindConnect:
			heap.Pop(&s.due)
			if !dead {
				s.connect(int(it.dev), now)
			}
		case kindRefresh:
			heap.Pop(&s.due)
			if !dead && d.online && d.gen == it.gen {
				s.writeEntry(d, now)
				s.schedule(dueItem{at: nowNs + int64(RefreshAfter(s.cfg.PresenceTTL)), dev: it.dev, kind: kindRefresh, gen: d.gen})
			}
		case kindStatus:
			s.due[0].at += int64(s.cfg.StatusEvery)
			heap.Fix(&s.due, 0)
			if !dead && d.online {
				s.sendStatus(d, now)
			}
		case kindEvent:
			s.due[0].at += int64(s.eventEvery())
			heap.Fix(&s.due, 0)
			if !dead && d.online {
				s.sendEvent(d, now)
			}
		}
	}
}

// churn takes devices offline at ReconnectPerMinute, each coming back
// OfflineFor later.
func (s *Sim) churn(now time.Time, dt time.Duration) {
	if s.cfg.ReconnectPerMinute <= 0 || now.Sub(s.started) < s.cfg.Ramp {
		return
	}
	s.churnAcc += s.cfg.ReconnectPerMinute * float64(len(s.devs)) * dt.Minutes()
	for ; s.churnAcc >= 1; s.churnAcc-- {
		i := s.rng.IntN(len(s.devs))
		d := &s.devs[i]
		if !d.online || s.stopped[d.node].Load() {
			continue
		}
		s.disconnect(d, now)
		s.schedule(dueItem{at: now.Add(s.cfg.OfflineFor).UnixNano(), dev: int32(i), kind: kindConnect})
	}
}

func (s *Sim) session(d *device) string {
	return d.sn + "-" + strconv.FormatUint(uint64(d.gen), 10)
}

// connect starts a session of device i: its entry, then its connected
// record, as the hub writes them.
func (s *Sim) connect(i int, now time.Time) {
	d := &s.devs[i]
	d.gen++
	d.online, d.since = true, now.UnixMilli()
	s.nodes[d.node].sessions++
	// The node's index of its devices, which the coordinator reads when
	// the node is lost, before the entry, as the hub writes them.
	s.publishJS(&nats.Msg{Subject: s.indexSubject(d), Data: []byte(s.session(d))})
	s.writeEntry(d, now)
	rec := hub.PresenceRecord{SN: d.sn, Type: s.cfg.Type, Group: d.group, Online: true, Reason: hub.ReasonConnected, Node: s.nodes[d.node].id, At: d.since}
	s.record(rec, s.session(d)+"/on")
	s.connects.Add(1)
	// The first refresh at a random point of the interval, as the hub
	// spreads devices that connected together.
	every := int64(RefreshAfter(s.cfg.PresenceTTL))
	s.schedule(dueItem{at: now.UnixNano() + every - s.rng.Int64N(every+1), dev: int32(i), kind: kindRefresh, gen: d.gen})
}

// disconnect ends a device's session as the hub does once the grace has
// passed: the offline record, then the entry's removal.
func (s *Sim) disconnect(d *device, now time.Time) {
	rec := hub.PresenceRecord{SN: d.sn, Type: s.cfg.Type, Group: d.group, Online: false, Reason: hub.ReasonClosed, Node: s.nodes[d.node].id, At: now.UnixMilli()}
	s.record(rec, s.session(d)+"/off")
	m := nats.NewMsg(subjects.KVKeys(hub.BucketPresence) + d.sn)
	m.Header.Set("KV-Operation", "DEL")
	s.publishJS(m)
	m = nats.NewMsg(s.indexSubject(d))
	m.Header.Set("KV-Operation", "DEL")
	s.publishJS(m)
	d.online = false
	s.nodes[d.node].sessions--
	s.entryDeletes.Add(1)
	s.disconnects.Add(1)
}

func (s *Sim) writeEntry(d *device, now time.Time) {
	e := hub.PresenceEntry{
		Node: s.nodes[d.node].id, Session: s.session(d), Since: d.since, LastSeen: now.UnixMilli(),
		Addr: "127.0.0.1:" + strconv.Itoa(30000+int(d.gen%30000)), Type: s.cfg.Type, Group: d.group,
	}
	b, _ := json.Marshal(e)
	s.publishJS(&nats.Msg{Subject: subjects.KVKeys(hub.BucketPresence) + d.sn, Data: b})
	s.entryWrites.Add(1)
}

// indexSubject is the subject of device d's key in its node's index
// (bucket hub_node_devices, key <node>.<sn>).
func (s *Sim) indexSubject(d *device) string {
	return subjects.KVKeys(schema.BucketNodeDevices) + s.nodes[d.node].id + "." + d.sn
}

// record stores r in HUB_PRESENCE and sends it on its watch subject, for
// the nodes whose sessions watch the device, as the hub does once a record
// is stored (the simulator does not wait for the acknowledgement).
func (s *Sim) record(r hub.PresenceRecord, msgID string) {
	subj, _ := subjects.Presence(r.SN) // checked in New
	b, _ := json.Marshal(r)
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, r.SN+"/"+msgID)
	s.publishJS(m)
	tok := func(v string) string {
		if v == "" {
			return "_"
		}
		return v
	}
	if err := s.cfg.Conn.Publish("hub.watch."+tok(r.Group)+"."+tok(r.Type)+"."+r.SN+".presence", b); err != nil {
		s.pubErrors.Add(1)
	}
}

func (s *Sim) sendStatus(d *device, now time.Time) {
	subj, _ := subjects.DeviceStatus(d.sn)
	b, _ := json.Marshal(hub.StatusRecord{SN: d.sn, Type: s.cfg.Type, Group: d.group, At: now.UnixMilli(), Status: s.status})
	s.publishData(&nats.Msg{Subject: subj, Data: b})
	s.statuses.Add(1)
}

func (s *Sim) sendEvent(d *device, now time.Time) {
	subj, _ := subjects.DeviceEvent(d.sn)
	b, _ := json.Marshal(hub.EventRecord{SN: d.sn, Type: s.cfg.Type, Group: d.group, At: now.UnixMilli(), Event: "sim_event", Priority: "normal", Data: s.evData})
	s.publishData(&nats.Msg{Subject: subj, Data: b})
	s.events.Add(1)
}

// heartbeat writes the liveness entry of every simulated node still alive.
func (s *Sim) heartbeat(now time.Time) {
	for k := range s.nodes {
		if s.stopped[k].Load() {
			continue
		}
		n := &s.nodes[k]
		b, _ := json.Marshal(hub.NodeEntry{Addr: n.addr, Since: s.started.UnixMilli(), Sessions: max(n.sessions, 0)})
		s.publishJS(&nats.Msg{Subject: subjects.KVKeys(hub.BucketNodes) + n.id, Data: b})
		s.nodeWrites.Add(1)
	}
}

func (s *Sim) publishData(m *nats.Msg) {
	if !s.cfg.CorePublish {
		s.publishJS(m)
		return
	}
	if err := s.cfg.Conn.PublishMsg(m); err != nil {
		s.pubErrors.Add(1)
	}
}

func (s *Sim) publishJS(m *nats.Msg) {
	if _, err := s.js.PublishMsgAsync(m); err != nil {
		s.pubErrors.Add(1)
	}
}
