package fleetsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of an asynchronous JetStream publish.
const (
	stallWait  = 5 * time.Second  // a full window makes Run wait this long at most
	ackTimeout = 10 * time.Second // an ack not back by then counts as failed
)

// Watch topics, the last token of a watch subject.
const (
	topicStatus   = "status"
	topicEvent    = "event"
	topicPresence = "presence"
)

// watchSubject is where the node that stored a record publishes a copy
// for the nodes whose sessions watch it: hub.watch.<group>.<type>.<sn>.<topic>,
// an empty group or type written "_". New has checked the tokens.
func watchSubject(topic, group, typ, sn string) string {
	subj, err := subjects.Watch(group, typ, sn, topic)
	if err != nil {
		// Names are checked when the simulator is built (ErrBadName).
		panic(err)
	}
	return subj
}

// publisher is one connection the simulator publishes on, with its
// JetStream context and the watch copies waiting for their records' acks.
type publisher struct {
	s  *Sim
	nc *nats.Conn
	js jetstream.JetStream

	// Owned by Run: records sent, in order, whose watch copy goes out
	// once the stream has acknowledged them.
	copies []watchCopy
}

type watchCopy struct {
	ack     jetstream.PubAckFuture
	subject string
}

func newPublisher(s *Sim, nc *nats.Conn) (*publisher, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(s.cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) { s.acked.Add(1) }),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { s.failed.Add(1) }),
	)
	if err != nil {
		return nil, fmt.Errorf("fleetsim: %w", err)
	}
	return &publisher{s: s, nc: nc, js: js}, nil
}

func (s *Sim) pubOf(i int) *publisher { return s.pubs[i%len(s.pubs)] }

// publishJS sends m asynchronously; once the stream has acknowledged it,
// sendCopies publishes the same bytes on watch, unless watch is empty.
func (p *publisher) publishJS(m *nats.Msg, watch string) {
	ack, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait))
	if err != nil {
		p.s.pubErrors.Add(1)
		return
	}
	if watch == "" || p.s.cfg.NoWatch {
		return
	}
	p.copies = append(p.copies, watchCopy{ack: ack, subject: watch})
	if len(p.copies) > 2*p.s.cfg.MaxPending {
		p.sendCopies()
	}
}

// publishCore sends m with a core publish, and its watch copy at once.
func (p *publisher) publishCore(m *nats.Msg, watch string) {
	if err := p.nc.PublishMsg(m); err != nil {
		p.s.pubErrors.Add(1)
		return
	}
	if watch != "" && !p.s.cfg.NoWatch {
		p.copy(watch, m.Data)
	}
}

func (p *publisher) copy(subject string, data []byte) {
	if err := p.nc.Publish(subject, data); err != nil {
		p.s.pubErrors.Add(1)
		return
	}
	p.s.watchCopies.Add(1)
}

// sendCopies publishes the watch copies of the records acknowledged so
// far, in the order they were sent, up to the first still unanswered. A
// record the stream refused gets no copy, as on a hub.
func (p *publisher) sendCopies() {
	k := 0
loop:
	for ; k < len(p.copies); k++ {
		c := p.copies[k]
		select {
		case <-c.ack.Ok():
			p.copy(c.subject, c.ack.Msg().Data)
		case <-c.ack.Err():
		default:
			break loop
		}
	}
	n := copy(p.copies, p.copies[k:])
	clear(p.copies[n:])
	p.copies = p.copies[:n]
}

// ensureIndex creates the node index bucket if no hub has.
func (s *Sim) ensureIndex(ctx context.Context) error {
	js := s.pubs[0].js
	if _, err := js.KeyValue(ctx, NodeIndexBucket); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("fleetsim: bucket %s: %w", NodeIndexBucket, err)
	}
	_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: NodeIndexBucket, Description: "each node's devices, key <node>.<sn>", History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("fleetsim: create bucket %s: %w", NodeIndexBucket, err)
	}
	return nil
}

func (s *Sim) session(d *device) string {
	return d.sn + "-" + strconv.FormatUint(uint64(d.gen), 10)
}

// connect starts a session of device i: its node index key, its entry,
// then its connected record, as the hub writes them.
func (s *Sim) connect(i int, now time.Time) {
	d := &s.devs[i]
	d.gen++
	d.online, d.since = true, now.UnixMilli()
	s.nodes[d.node].sessions++
	if s.index {
		s.pubOf(i).publishJS(&nats.Msg{Subject: s.indexKey(d), Data: []byte(s.session(d))}, "")
		s.indexWrites.Add(1)
	}
	s.writeEntry(i, now)
	rec := hub.PresenceRecord{SN: d.sn, Type: s.cfg.Type, Group: s.groups[d.group], Online: true, Reason: hub.ReasonConnected, Node: s.nodes[d.node].id, At: d.since}
	s.record(i, rec, s.session(d)+"/on")
	s.connects.Add(1)
	// The first refresh at a random point of the interval, as the hub
	// spreads devices that connected together.
	every := int64(RefreshAfter(s.cfg.PresenceTTL))
	s.schedule(dueItem{at: now.UnixNano() + every - s.rng.Int64N(every+1), dev: int32(i), kind: kindRefresh, gen: d.gen})
}

// disconnect ends device i's session as the hub does once the grace has
// passed: the offline record, then the entry's removal and its node
// index key's.
func (s *Sim) disconnect(i int, now time.Time) {
	d := &s.devs[i]
	p := s.pubOf(i)
	rec := hub.PresenceRecord{SN: d.sn, Type: s.cfg.Type, Group: s.groups[d.group], Online: false, Reason: hub.ReasonClosed, Node: s.nodes[d.node].id, At: now.UnixMilli()}
	s.record(i, rec, s.session(d)+"/off")
	m := nats.NewMsg(subjects.KVKeys(hub.BucketPresence) + d.sn)
	m.Header.Set("KV-Operation", "DEL")
	p.publishJS(m, "")
	s.entryDeletes.Add(1)
	if s.index {
		m := nats.NewMsg(s.indexKey(d))
		m.Header.Set("KV-Operation", "DEL")
		p.publishJS(m, "")
		s.indexWrites.Add(1)
	}
	d.online = false
	s.nodes[d.node].sessions--
	s.disconnects.Add(1)
}

// indexKey is the subject of device d's key in the node index.
func (s *Sim) indexKey(d *device) string {
	return subjects.KVKeys(NodeIndexBucket) + s.nodes[d.node].id + "." + d.sn
}

func (s *Sim) writeEntry(i int, now time.Time) {
	d := &s.devs[i]
	e := hub.PresenceEntry{
		Node: s.nodes[d.node].id, Session: s.session(d), Since: d.since, LastSeen: now.UnixMilli(),
		Addr: "127.0.0.1:" + strconv.Itoa(30000+int(d.gen%30000)), Type: s.cfg.Type, Group: s.groups[d.group],
	}
	b, _ := json.Marshal(e)
	s.pubOf(i).publishJS(&nats.Msg{Subject: subjects.KVKeys(hub.BucketPresence) + d.sn, Data: b}, "")
	s.entryWrites.Add(1)
}

func (s *Sim) record(i int, r hub.PresenceRecord, msgID string) {
	subj, _ := subjects.Presence(r.SN) // checked in New
	b, _ := json.Marshal(r)
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, r.SN+"/"+msgID)
	s.pubOf(i).publishJS(m, watchSubject(topicPresence, r.Group, r.Type, r.SN))
}

func (s *Sim) sendStatus(i int, now time.Time) {
	d := &s.devs[i]
	subj, _ := subjects.DeviceStatus(d.sn)
	g := s.groups[d.group]
	b, _ := json.Marshal(hub.StatusRecord{SN: d.sn, Type: s.cfg.Type, Group: g, At: now.UnixMilli(), Status: json.RawMessage(s.status)})
	s.publishData(i, &nats.Msg{Subject: subj, Data: b}, watchSubject(topicStatus, g, s.cfg.Type, d.sn))
	s.statuses.Add(1)
}

func (s *Sim) sendEvent(i int, now time.Time) {
	d := &s.devs[i]
	subj, _ := subjects.DeviceEvent(d.sn)
	g := s.groups[d.group]
	b, _ := json.Marshal(hub.EventRecord{SN: d.sn, Type: s.cfg.Type, Group: g, At: now.UnixMilli(), Event: "sim_event", Priority: "normal", Data: json.RawMessage(s.evData)})
	s.publishData(i, &nats.Msg{Subject: subj, Data: b}, watchSubject(topicEvent, g, s.cfg.Type, d.sn))
	s.events.Add(1)
}

func (s *Sim) publishData(i int, m *nats.Msg, watch string) {
	if s.cfg.CorePublish {
		s.pubOf(i).publishCore(m, watch)
		return
	}
	s.pubOf(i).publishJS(m, watch)
}

// heartbeat writes the liveness entry of every simulated node still alive.
func (s *Sim) heartbeat() {
	for k := range s.nodes {
		if s.stopped[k].Load() {
			continue
		}
		n := &s.nodes[k]
		b, _ := json.Marshal(hub.NodeEntry{Addr: n.addr, Since: s.started.UnixMilli(), Sessions: max(n.sessions, 0)})
		s.pubs[0].publishJS(&nats.Msg{Subject: subjects.KVKeys(hub.BucketNodes) + n.id, Data: b}, "")
		s.nodeWrites.Add(1)
	}
}
