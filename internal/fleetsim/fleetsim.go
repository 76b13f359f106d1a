// Package fleetsim plays the NATS side of a device fleet held by other
// nodes: N simulated devices spread over K simulated nodes, without a
// socket. It writes what those nodes would write to the bus at the rates
// real devices cause, so that a real hub node on the same NATS can be
// measured under a fleet of 100,000 or 1,000,000 devices:
//
//   - each simulated node's liveness entry in hub_nodes, every NodeTTL/3;
//   - each online device's entry in hub_presence, written at connect and
//     rewritten before PresenceTTL runs out, as the hub does (RefreshAfter);
//   - each online device's key <node>.<sn> in the node index
//     (NodeIndexBucket), put at connect and deleted when the device
//     leaves its node, so that the coordinator finds a lost node's devices
//     without watching every entry;
//   - a connected record on hub.presence.<sn> at connect and an offline
//     record (reason closed) when the device leaves, each with a
//     Nats-Msg-Id built as the hub builds it;
//   - status records on hub.dev.<sn>.status every StatusEvery and event
//     records on hub.dev.<sn>.event at EventsPerHour, each device at its own
//     phase, so the load is even over time rather than in bursts;
//   - after each record is stored, one core publish of the same bytes on
//     its watch subject hub.watch.<group>.<type>.<sn>.<topic>, for the
//     nodes whose sessions watch that device, its group or type;
//   - reconnect churn: ReconnectPerMinute of the devices per minute go
//     offline and come back OfflineFor later.
//
// Everything is driven from one time-ordered schedule (a heap of due
// items) that Run works through on a short tick, at most twice the
// fleet's steady rate, so the simulator's own cost is what it publishes and a
// simulator that falls behind says so (Stats.Behind) instead of catching
// up in a burst. JetStream writes are asynchronous, at most MaxPending in
// flight per connection; a full window makes Run wait (back pressure), it
// does not drop.
//
// The simulator writes entries with plain puts and records without the
// hub's compare-and-set on the subject's last sequence: it is the only
// writer for its devices, and what the hub's watchers and consumers see is
// the same.
//
// A real hub node reports node_lost for the devices of a simulated node
// that stops refreshing (StopNode) only if that hub is the coordinator, the
// live node with the smallest id. Simulated node ids start with NodePrefix,
// "zzsim-" by default: 'z' is the greatest character a KV key may hold, so
// they sort after any usual hub id (host name and port), and a simulated
// node, which does no coordinating, never holds the role.
package fleetsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// NodeIndexBucket is the KV bucket of the node index: key <node>.<sn> for
// each device a node holds.
const NodeIndexBucket = "hub_node_devices"

// Config says what fleet to play.
type Config struct {
	// Conn is the NATS connection to publish on. Required.
	Conn *nats.Conn
	// Conns are more connections to spread the publishing over: device i
	// writes through connection i mod (1+len(Conns)), Conn first.
	Conns []*nats.Conn
	// Devices is the number of simulated devices. Required.
	Devices int
	// Nodes is the number of simulated nodes holding them (device i is on
	// node i mod Nodes). Default 1.
	Nodes int
	// NodePrefix and SNPrefix name the simulated nodes and devices
	// (NodePrefix+k, SNPrefix+i). Defaults "zzsim-" and "SIM-".
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
	// NoWatch leaves out the copies on the watch subjects, as a hub that
	// predates them.
	NoWatch bool
	// NoNodeIndex leaves out the node index. Without it, Run creates the
	// bucket when no hub has (start the hub first: it owns the bucket's
	// configuration).
	NoNodeIndex bool
	// CorePublish sends status and event records with core publishes
	// (the streams capture them) instead of acknowledged JetStream
	// publishes; their watch copies then follow at once. It is cheaper
	// for the simulator (no acks to read), bounded by the connection (a
	// full write buffer waits for the socket); a stream that sheds them
	// under excessive ingest says so only in its sequence numbers and
	// the server's log.
	CorePublish bool
	// MaxPending bounds the JetStream publishes in flight on each
	// connection. Default 4096.
	MaxPending int
	// Tick is how often the schedule is worked through. Default 10ms.
	Tick time.Duration
}

// Errors.
var (
	ErrNoConn    = errors.New("fleetsim: Conn is required")
	ErrNoDevices = errors.New("fleetsim: Devices must be positive")
	ErrRunning   = errors.New("fleetsim: Run was called twice")
	ErrBadName   = errors.New("fleetsim: bad name")
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
	defS(&c.NodePrefix, "zzsim-")
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
	IndexWrites           int64 // node index puts and deletes
	NodeWrites            int64 // hub_nodes puts
	Statuses, Events      int64
	WatchCopies           int64 // core publishes on watch subjects
	PublishErrors         int64 // publishes that could not be sent
	Acked, Failed         int64
	// Behind is how late the most overdue item was at the last tick;
	// MaxBehind the most since the ramp ended. A simulator that keeps its
	// rates stays within a tick or two.
	Behind, MaxBehind time.Duration
}

// Published is the number of messages sent so far, of every kind.
func (st Stats) Published() int64 {
	return st.Connects + st.Disconnects + st.EntryWrites + st.EntryDeletes + st.IndexWrites +
		st.NodeWrites + st.Statuses + st.Events + st.WatchCopies
}

// Sim is a simulated fleet. Run plays it; Stats and StopNode may be called
// from any goroutine meanwhile.
type Sim struct {
	cfg     Config
	pubs    []*publisher
	groups  []string
	devs    []device
	nodes   []simNode
	running atomic.Bool
	stopped []atomic.Bool // per node: StopNode was called

	connects, disconnects, entryWrites, entryDeletes atomic.Int64
	indexWrites, nodeWrites, statuses, events        atomic.Int64
	watchCopies, pubErrors, acked, failed            atomic.Int64
	behind, maxBehind                                atomic.Int64

	// Owned by Run.
	due      dueHeap
	rng      *rand.Rand
	churnAcc float64
	maxRate  float64 // most items worked through a second
	index    bool
	status   []byte
	evData   []byte
	started  time.Time
}

type device struct {
	sn     string
	group  int32 // index in Sim.groups
	node   int32
	gen    uint32 // session generation
	online bool
	since  int64 // ms, the session's start
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
	if err := s.checkNames(); err != nil {
		return nil, err
	}
	for _, nc := range append([]*nats.Conn{cfg.Conn}, cfg.Conns...) {
		if nc == nil {
			return nil, ErrNoConn
		}
		p, err := newPublisher(s, nc)
		if err != nil {
			return nil, err
		}
		s.pubs = append(s.pubs, p)
	}
	s.nodes = make([]simNode, cfg.Nodes)
	s.stopped = make([]atomic.Bool, cfg.Nodes)
	for k := range s.nodes {
		s.nodes[k] = simNode{id: s.NodeID(k), addr: "127.0.0.1:" + strconv.Itoa(20000+k)}
	}
	s.groups = make([]string, cfg.Groups)
	for g := range s.groups {
		s.groups[g] = cfg.GroupPrefix + strconv.Itoa(g)
	}
	s.devs = make([]device, cfg.Devices)
	for i := range s.devs {
		s.devs[i] = device{sn: s.SN(i), group: int32(i % cfg.Groups), node: int32(i % cfg.Nodes)}
	}
	if _, err := subjects.Presence(s.SN(cfg.Devices - 1)); err != nil {
		return nil, fmt.Errorf("%w: serial %q: %v", ErrBadName, s.SN(cfg.Devices-1), err)
	}
	s.status = []byte(`{"battery":87,"location":{"code":0,"msg":"ok","x":1.5,"y":2.5},"electricity":{"code":0,"msg":"ok"}}`)
	s.evData = []byte(`{"detail":"simulated"}`)
	return s, nil
}

// checkNames refuses prefixes that would not make subject tokens and KV
// keys: a node id is one token of a node index key, and so is a serial.
func (s *Sim) checkNames() error {
	for _, n := range []struct{ what, v string }{
		{"NodePrefix", s.cfg.NodePrefix + "0"}, {"SNPrefix", s.cfg.SNPrefix + "0"},
		{"Type", s.cfg.Type}, {"GroupPrefix", s.cfg.GroupPrefix + "0"},
	} {
		if !subjects.ValidToken(n.v) || !validKeyToken(n.v) {
			return fmt.Errorf("%w: %s %q: want letters, digits, '-', '_', '/' or '='", ErrBadName, n.what, n.v)
		}
	}
	return nil
}

// validKeyToken reports whether s is made only of the characters a KV key
// allows, less '.', which separates the tokens.
func validKeyToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '/', c == '=':
		default:
			return false
		}
	}
	return s != ""
}

// SN is the serial number of device i.
func (s *Sim) SN(i int) string { return s.cfg.SNPrefix + fmt.Sprintf("%07d", i) }

// NodeID is the id of simulated node k.
func (s *Sim) NodeID(k int) string { return s.cfg.NodePrefix + strconv.Itoa(k) }

// NodeOf is the simulated node that holds device i.
func (s *Sim) NodeOf(i int) int { return i % s.cfg.Nodes }

// Group is device i's group.
func (s *Sim) Group(i int) string { return s.groups[i%s.cfg.Groups] }

// Config is the simulator's configuration, defaults filled in.
func (s *Sim) Config() Config { return s.cfg }

// StopNode makes simulated node k die: it stops refreshing its liveness
// entry, and its devices fall silent (no refresh, record or churn), as if
// the process had been killed. Their entries and node index keys are left
// for the hub to find.
func (s *Sim) StopNode(k int) { s.stopped[k].Store(true) }

// Stats returns the counters so far.
func (s *Sim) Stats() Stats {
	return Stats{
		Connects: s.connects.Load(), Disconnects: s.disconnects.Load(),
		EntryWrites: s.entryWrites.Load(), EntryDeletes: s.entryDeletes.Load(),
		IndexWrites: s.indexWrites.Load(), NodeWrites: s.nodeWrites.Load(),
		Statuses: s.statuses.Load(), Events: s.events.Load(), WatchCopies: s.watchCopies.Load(),
		PublishErrors: s.pubErrors.Load(), Acked: s.acked.Load(), Failed: s.failed.Load(),
		Behind: time.Duration(s.behind.Load()), MaxBehind: time.Duration(s.maxBehind.Load()),
	}
}
