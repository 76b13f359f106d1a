package hub

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

type historyArgs struct {
	SN    *string `json:"sn"`
	Topic *string `json:"topic"`
	Limit *int    `json:"limit"`
}

const maxHistory = 1000

// serveHistory answers a device's most recent records of one topic, newest
// first, read from the topic's stream by subject.
func (srv *Server) serveHistory(s *Session, m *wire.Message) (any, *wire.Error) {
	var a historyArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	if a.SN == nil {
		return nil, missing("sn")
	}
	if !auth.ValidSerial(*a.SN) {
		return nil, wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
	}
	topic := "status"
	if a.Topic != nil {
		topic = *a.Topic
	}
	limit := 100
	if a.Limit != nil {
		limit = *a.Limit
	}
	if limit < 1 || limit > maxHistory {
		return nil, wire.Errorf(wire.CodeBadRequest, "args.limit: must be 1 to 1000")
	}
	var stream, subj string
	var err error
	switch topic {
	case "status":
		stream = StreamStatus
		subj, err = subjects.DeviceStatus(*a.SN)
	case "event":
		stream = StreamEvents
		subj, err = subjects.DeviceEvent(*a.SN)
	case "presence":
		stream = StreamPresence
		subj, err = subjects.Presence(*a.SN)
	default:
		return nil, wire.Errorf(wire.CodeBadRequest, "args.topic: must be status, event or presence")
	}
	if err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
	}
	_, group, known := srv.deviceAttrs(*a.SN)
	if !known {
		return nil, wire.Errorf(wire.CodeNotFound, "unknown device "+*a.SN)
	}
	if !auth.CanSee(s.Identity().Groups, group) {
		return nil, wire.Errorf(wire.CodeForbidden, "device "+*a.SN+" is outside your groups")
	}
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		recs, err := srv.history(ctx, stream, subj, limit)
		if err != nil {
			srv.log.Warn("history read failed", "subject", subj, "err", err)
			return nil, wire.Errorf(wire.CodeUnavailable, "history unavailable")
		}
		return map[string]any{"records": recs}, nil
	})
}

// history reads the last limit records on subject, newest first. Streams
// keep a bounded number of records per device, so reading them all with an
// ordered consumer filtered to the subject, keeping the last limit, costs
// at most that bound.
func (srv *Server) history(ctx context.Context, stream, subject string, limit int) ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	recs := []json.RawMessage{}
	if _, err := srv.js.Stream(ctx, stream); err != nil {
		return nil, err
	}
	cons, err := srv.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	pending := int(info.NumPending)
	if pending == 0 {
		return recs, nil
	}
	ring := make([]json.RawMessage, 0, min(limit, pending))
	start := 0
	for got := 0; got < pending; {
		batch, err := cons.Fetch(min(pending-got, 500), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			// Any writer of the stream may have stored something else: one
			// record that is not a JSON object would void the whole answer.
			if !wire.IsObject(m.Data()) || !json.Valid(m.Data()) {
				continue
			}
			if len(ring) < limit {
				ring = append(ring, m.Data())
			} else {
				ring[start] = m.Data()
				start = (start + 1) % limit
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 {
			break
		}
		got += n
	}
	// Oldest is at start; walk backwards from the newest.
	for i := len(ring) - 1; i >= 0; i-- {
		recs = append(recs, ring[(start+i)%len(ring)])
	}
	return recs, nil
}
