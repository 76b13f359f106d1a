package hub

import (
	"errors"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// route is what a subscribed subject is for, parsed once per interest
// rather than once per message.
type route struct {
	kind   routeKind
	target subjects.Target // who the subject names (a command's: its device)
}

type routeKind uint8

const (
	routeNone    routeKind = iota // neither: nothing is dispatched
	routePush                     // hub.<kind>.<name>.push, hub.all.push
	routeCommand                  // hub.dev.<sn>.cmd
)

// routeOf parses subject.
func routeOf(subject string) route {
	if sn, ok := subjects.ParseDeviceCmd(subject); ok {
		return route{kind: routeCommand, target: subjects.Target{Kind: subjects.KindDevice, Value: sn}}
	}
	if target, err := subjects.ParsePush(subject); err == nil {
		return route{kind: routePush, target: target}
	}
	return route{}
}

// dispatch handles one message from an interest's subscription, on the
// subject's dispatch shard.
func (srv *Server) dispatch(m *nats.Msg) {
	rt := routeOf(m.Subject)
	srv.dispatchRoute(&rt, m)
}

// dispatchRoute handles one message on a subject of route rt.
func (srv *Server) dispatchRoute(rt *route, m *nats.Msg) {
	switch rt.kind {
	case routeCommand:
		srv.deliverCommand(rt.target.Value, m)
	case routePush:
		srv.deliverPush(rt.target, m)
	}
}

// deliverPush checks a push body from the bus and queues its frame to the
// local sessions it names. Every body is checked, and a bad one counted,
// even when no session here would receive it; the frame is encoded only
// once a recipient is found.
func (srv *Server) deliverPush(target subjects.Target, m *nats.Msg) {
	var body schema.PushBody
	if srv.checkedPush(m, &body) {
		srv.deliverChecked(target, m, &body)
	}
}

// checkedPush decodes and checks m's push body into body, counting and
// logging a bad one (reason malformed, invalid or reserved).
func (srv *Server) checkedPush(m *nats.Msg, body *schema.PushBody) bool {
	if err := schema.DecodePushBody(m.Data, body); err != nil {
		srv.dropPush(dropMalformed, m.Subject, err)
		return false
	}
	if err := body.Check(); err != nil {
		reason := dropInvalid
		if errors.Is(err, schema.ErrReservedService) {
			reason = dropReserved
		}
		srv.dropPush(reason, m.Subject, err)
		return false
	}
	return true
}

// deliverChecked queues the frame of a checked push to its recipients.
func (srv *Server) deliverChecked(target subjects.Target, m *nats.Msg, body *schema.PushBody) {
	start := time.Now()
	var buf [smallSet]*Session
	members := srv.audience(m.Subject, body.Where, buf[:0])
	if first := firstRecipient(members, target, body.Where); first >= 0 {
		if frame, ok := srv.pushFrame(m, body); ok {
			srv.sendPush(members[first:], target, body.Where, frame)
		}
	}
	srv.metrics.fanout.Observe(time.Since(start).Seconds())
}

// pushFrame encodes the frame of a checked push: its id is the body's,
// else the message's Nats-Msg-Id, else a new one.
func (srv *Server) pushFrame(m *nats.Msg, body *schema.PushBody) ([]byte, bool) {
	if body.ID == "" {
		body.ID = m.Header.Get(nats.MsgIdHdr)
	}
	if body.ID == "" {
		body.ID = nuid.Next()
	}
	frame, err := wire.AppendPush(nil, body.Service, body.ID, body.Values)
	if err != nil {
		srv.dropPush(dropInvalid, m.Subject, err)
		return nil, false
	}
	return frame, true
}

// Reasons a push is dropped (fleethub_pushes_dropped_total).
const (
	dropMalformed    = "malformed"      // not a JSON push body
	dropInvalid      = "invalid"        // a body that breaks the rules (PushBody.Check)
	dropReserved     = "reserved"       // names one of the hub's own services
	dropBacklog      = "backlog"        // its subject's dispatch backlog was full
	dropOverflow     = "overflow"       // nats.go's channel was full before dispatch
	dropSlowConsumer = "slow_consumer"  // the session's outbound queue was full
	dropClosed       = "session_closed" // the session was closing
	// A status, event or presence record read back that no hub could have
	// stored (another writer of the stream): neither kept nor pushed.
	dropInvalidRecord = "invalid_record"
)

// dropReasons are created at start, so that each counter reads 0 before
// the first drop, not "no data".
var dropReasons = []string{dropMalformed, dropInvalid, dropReserved, dropBacklog, dropOverflow, dropSlowConsumer, dropClosed, dropInvalidRecord}

// dropPush counts a push (or command) that will not be delivered, and logs
// it at a bounded rate.
func (srv *Server) dropPush(reason, subject string, err error) {
	srv.metrics.pushesDropped.WithLabelValues(reason).Inc()
	srv.warnLimited("push dropped", "reason", reason, "subject", subject, "err", err)
}

// fanout queues frame to the local sessions of target that match where.
func (srv *Server) fanout(subject string, target subjects.Target, where map[string]string, frame []byte) {
	var buf [smallSet]*Session
	srv.sendPush(srv.audience(subject, where, buf[:0]), target, where, frame)
}

// audience returns the local sessions a push on subject may reach,
// appended to buf or shared (read only). It is the smallest local
// interest that can hold every recipient: the subject's own, or one named
// by a where attribute (a push to everyone with where {"type":"dance_dog"}
// walks only the dance_dog devices). Not every one of them need match.
func (srv *Server) audience(subject string, where map[string]string, buf []*Session) []*Session {
	walk := subject
	if len(where) > 0 {
		best := srv.interest.size(subject)
		for k, v := range where {
			alt, err := whereInterest(k, v)
			if err != nil {
				return buf // no session can have that attribute
			}
			if n := srv.interest.size(alt); n < best {
				walk, best = alt, n
			}
		}
	}
	return srv.interest.members(walk, buf)
}

// firstRecipient is the index of the first of members that target and
// where name, -1 when none does.
func firstRecipient(members []*Session, target subjects.Target, where map[string]string) int {
	for i, s := range members {
		if id := s.Identity(); id != nil && id.matchesTarget(target) && id.matchesWhere(where) {
			return i
		}
	}
	return -1
}

// maxJoinedFrame caps the bytes of the pushes deliverPushes joins into
// one frame.
const maxJoinedFrame = 16 << 10

// deliverPushes delivers a backlog batch of one push subject, in order.
// Pushes without a where condition have the same audience (the sessions
// of the subject that its target names), so consecutive ones go out
// joined, newline-delimited, as one frame per session (§1: a server frame
// may hold several messages; at most maxJoinedFrame bytes): a burst to the
// same sessions costs each session one write, not one per push. A push
// with a where condition is delivered alone, between them. Every body is
// checked and a bad one counted, as deliverPush does.
func (srv *Server) deliverPushes(target subjects.Target, msgs []*nats.Msg) {
	var buf [smallSet]*Session
	members := srv.audience(msgs[0].Subject, nil, buf[:0])
	first := firstRecipient(members, target, nil)
	var joined []byte
	count := 0
	flush := func() {
		if count == 0 {
			return
		}
		start := time.Now()
		srv.sendPushes(members[first:], target, nil, joined, count)
		srv.metrics.fanout.Observe(time.Since(start).Seconds())
		joined, count = nil, 0
	}
	for _, m := range msgs {
		var body schema.PushBody
		switch {
		case !srv.checkedPush(m, &body):
		case len(body.Where) > 0:
			flush()
			srv.deliverChecked(target, m, &body)
		case first < 0: // checked and counted; nobody here receives it
		default:
			frame, ok := srv.pushFrame(m, &body)
			if !ok {
				continue
			}
			if count > 0 && len(joined)+1+len(frame) > maxJoinedFrame {
				flush()
			}
			if count > 0 {
				joined = append(joined, '\n')
			}
			joined = append(joined, frame...)
			count++
		}
	}
	flush()
}

// sendPush queues frame to those of members that target and where name.
func (srv *Server) sendPush(members []*Session, target subjects.Target, where map[string]string, frame []byte) {
	srv.sendPushes(members, target, where, frame, 1)
}

// sendPushes queues frame, which holds n pushes, to those of members that
// target and where name; deliveries and drops count each push.
func (srv *Server) sendPushes(members []*Session, target subjects.Target, where map[string]string, frame []byte, n int) {
	delivered := 0
	for _, s := range members {
		id := s.Identity()
		if id == nil || !id.matchesTarget(target) || !id.matchesWhere(where) {
			continue
		}
		switch err := s.t.Send(frame); err {
		case nil:
			delivered += n
		case ErrQueueFull:
			srv.metrics.pushesDropped.WithLabelValues(dropSlowConsumer).Add(float64(n))
			s.SlowConsumer()
		default:
			srv.metrics.pushesDropped.WithLabelValues(dropClosed).Add(float64(n))
		}
	}
	srv.metrics.pushesDelivered.Add(float64(delivered))
	srv.metrics.pushedOut("backend", delivered)
}
