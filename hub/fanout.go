package hub

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// dispatch handles one message from an interest's subscription, on the
// subject's dispatch shard.
func (srv *Server) dispatch(m *nats.Msg) {
	if sn, ok := subjects.ParseDeviceCmd(m.Subject); ok {
		srv.deliverCommand(sn, m)
		return
	}
	target, err := subjects.ParsePush(m.Subject)
	if err != nil {
		return
	}
	var body schema.PushBody
	if err := json.Unmarshal(m.Data, &body); err != nil {
		srv.dropPush(dropMalformed, m.Subject, err)
		return
	}
	if err := body.Check(); err != nil {
		reason := dropInvalid
		if errors.Is(err, schema.ErrReservedService) {
			reason = dropReserved
		}
		srv.dropPush(reason, m.Subject, err)
		return
	}
	if body.ID == "" {
		body.ID = m.Header.Get(nats.MsgIdHdr)
	}
	if body.ID == "" {
		body.ID = nuid.Next()
	}
	frame, err := wire.EncodePush(body.Service, body.ID, body.Values)
	if err != nil {
		srv.dropPush(dropInvalid, m.Subject, err)
		return
	}
	start := time.Now()
	srv.fanout(m.Subject, target, body.Where, frame)
	srv.metrics.fanout.Observe(time.Since(start).Seconds())
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

// fanout queues frame to the local sessions of target that match where. It
// walks the smallest local interest that can hold every recipient: the
// target's own, or one named by a where attribute (a push to everyone with
// where {"type":"dance_dog"} walks only the dance_dog devices).
func (srv *Server) fanout(subject string, target subjects.Target, where map[string]string, frame []byte) {
	walk := subject
	if len(where) > 0 {
		best := srv.interest.size(subject)
		for k, v := range where {
			alt, err := whereInterest(k, v)
			if err != nil {
				return // no session can have that attribute
			}
			if n := srv.interest.size(alt); n < best {
				walk, best = alt, n
			}
		}
	}
	var buf [smallSet]*Session
	members := srv.interest.members(walk, buf[:0])
	delivered := 0
	for _, s := range members {
		id := s.Identity()
		if id == nil || !id.matchesTarget(target) || !id.matchesWhere(where) {
			continue
		}
		switch err := s.t.Send(frame); err {
		case nil:
			delivered++
		case ErrQueueFull:
			srv.metrics.pushesDropped.WithLabelValues(dropSlowConsumer).Inc()
			s.SlowConsumer()
		default:
			srv.metrics.pushesDropped.WithLabelValues(dropClosed).Inc()
		}
	}
	srv.metrics.pushesDelivered.Add(float64(delivered))
	srv.metrics.pushedOut("backend", delivered)
}
