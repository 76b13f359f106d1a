package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/auth"
	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type historyArgs struct {
	SN    *string `json:"sn"`
	Topic *string `json:"topic"`
	Limit *int    `json:"limit"`
}

const (
	maxHistory = 1000
	// historyTimeout bounds one history read, its wait for a slot aside.
	historyTimeout = 5 * time.Second
	// historyFetchBytes bounds one fetch of a stream read forward: with the
	// node's reads bounded (Config.HistoryReadsPerNode), so is what the
	// node's NATS connection has in flight for history.
	historyFetchBytes = 1 << 20
)

// serveHistory answers a device's most recent records of one topic, newest
// first, read from the topic's stream by subject: as many as fit the
// answer's byte cap, with "truncated" when that cut them short.
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
		stream = schema.StreamStatus
		subj, err = subjects.DeviceStatus(*a.SN)
	case "event":
		stream = schema.StreamEvents
		subj, err = subjects.DeviceEvent(*a.SN)
	case "presence":
		stream = schema.StreamPresence
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
	if !m.HasRequestID {
		return nil, nil // a success without request_id is not answered: read nothing
	}
	budget := newRecordBudget(srv.valuesBudget(m), limit)
	if budget == nil {
		return nil, srv.errAnswerTooLarge()
	}
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		gate := srv.admit.history
		ok, werr := gate.acquire(ctx, srv.admit, s)
		if !ok || werr != nil {
			return nil, werr
		}
		defer gate.release(s)
		err := srv.history(ctx, stream, subj, budget)
		if budget.skipped > 0 {
			srv.warnLimited("history: records that are not JSON skipped", "subject", subj, "skipped", budget.skipped)
		}
		if err != nil {
			srv.warnLimited("history read failed", "subject", subj, "err", err)
			return nil, wire.Errorf(wire.CodeUnavailable, "history unavailable")
		}
		return budget.values(), nil
	})
}

// history reads into b the newest records on subject. A stream that allows
// direct gets is walked backwards, one record per request, so the node
// reads what the answer keeps and no more; another is read forward with a
// consumer, each fetch bounded in bytes, keeping the newest that fit.
// Streams keep a bounded number of records per device, which bounds that
// read.
func (srv *Server) history(ctx context.Context, stream, subject string, b *recordBudget) error {
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	st, err := srv.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	if st.CachedInfo().Config.AllowDirect {
		return srv.historyBackward(ctx, stream, subject, b)
	}
	return srv.historyForward(ctx, st, subject, b)
}

// directGetRequest is a JetStream direct get asking for the last message on
// a subject at or before a sequence (nats-server 2.11 and later).
type directGetRequest struct {
	MultiLast []string `json:"multi_last"`
	UpToSeq   uint64   `json:"up_to_seq,omitempty"`
}

// directGetSubject is the direct get API subject of one of the hub's
// streams, in the node's JetStream.
func (srv *Server) directGetSubject(stream string) string {
	return pres.DirectGetSubject(srv.cfg.JSDomain, stream)
}

// historyBackward walks the stream backwards from its last record on
// subject, until b is full or the records end.
func (srv *Server) historyBackward(ctx context.Context, stream, subject string, b *recordBudget) error {
	sub, err := srv.nc.SubscribeSync(srv.nc.NewInbox())
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	api := srv.directGetSubject(stream)
	var upTo uint64
	for !b.full() {
		req, err := json.Marshal(directGetRequest{MultiLast: []string{subject}, UpToSeq: upTo})
		if err != nil {
			return err
		}
		if err := srv.nc.PublishRequest(api, sub.Subject, req); err != nil {
			return err
		}
		seq, data, err := readDirectGet(ctx, sub)
		if err != nil || seq == 0 {
			return err
		}
		b.older(data)
		if seq == 1 {
			return nil
		}
		upTo = seq - 1
	}
	return nil
}

// readDirectGet reads one answer to a direct get of the last message: the
// message, then the end-of-batch marker. seq is 0 when there is none.
func readDirectGet(ctx context.Context, sub *nats.Subscription) (seq uint64, data []byte, err error) {
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return 0, nil, err
		}
		switch status := m.Header.Get("Status"); status {
		case "":
			seq, err = strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err != nil || seq == 0 {
				return 0, nil, fmt.Errorf("direct get: bad %s header %q", jetstream.SequenceHeader, m.Header.Get(jetstream.SequenceHeader))
			}
			data = m.Data
		case "204": // end of batch
			return seq, data, nil
		case "404": // no (more) records
			return 0, nil, nil
		default:
			return 0, nil, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
		}
	}
}

// historyForward reads every record on subject with an ordered consumer,
// in fetches bounded in bytes, keeping the newest that fit b.
func (srv *Server) historyForward(ctx context.Context, st jetstream.Stream, subject string, b *recordBudget) error {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, InactiveThreshold: historyTimeout,
	})
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	pending := int(info.NumPending)
	for got := 0; got < pending; {
		batch, err := cons.Fetch(min(pending-got, maxHistory), jetstream.FetchMaxBytes(historyFetchBytes), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			b.newer(m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if n == 0 {
			break
		}
		got += n
	}
	b.newestFirst()
	return nil
}

// recordBudget collects the newest records of a history, at most limit of
// them and at most bytes of them as encoded in the answer. Records are
// kept compact and HTML-escaped, as encoding/json writes them, so that
// their size here is their size on the wire; one that is not valid JSON (a
// hostile writer on the stream) is skipped and counted in skipped.
type recordBudget struct {
	limit, bytes int
	used         int      // bytes of the records kept, a separator each
	recs         [][]byte // the records kept from head on, newest first once done
	head         int
	truncated    bool // a record that would have been kept did not fit
	skipped      int  // records that were not valid JSON
	scratch      bytes.Buffer
}

// The fixed parts of a history's values.
const (
	recordsOpen  = `{"records":[`
	recordsClose = `]}`
	truncatedTag = `,"truncated":true`
)

// newRecordBudget sizes a budget for values of at most budget bytes, or
// returns nil when not even the empty answer fits.
func newRecordBudget(budget, limit int) *recordBudget {
	budget -= len(recordsOpen) + len(recordsClose) + len(truncatedTag)
	if budget < 0 {
		return nil
	}
	return &recordBudget{limit: limit, bytes: budget}
}

// full reports whether a backward walk is done: limit records kept, or one
// that did not fit.
func (b *recordBudget) full() bool { return len(b.recs) >= b.limit || b.truncated }

// encode returns rec as it goes out, or nil when it is not valid JSON.
func (b *recordBudget) encode(rec []byte) []byte {
	b.scratch.Reset()
	// Any writer of the stream may have stored something else: only JSON
	// objects are records.
	if !wire.IsObject(rec) {
		b.skipped++
		return nil
	}
	if err := json.Compact(&b.scratch, rec); err != nil {
		b.skipped++
		return nil
	}
	var out bytes.Buffer
	out.Grow(b.scratch.Len())
	json.HTMLEscape(&out, b.scratch.Bytes())
	return out.Bytes()
}

// older adds rec as older than those kept (a backward walk, newest first),
// or marks the history truncated when it does not fit.
func (b *recordBudget) older(rec []byte) {
	enc := b.encode(rec)
	if enc == nil {
		return
	}
	if b.used+len(enc)+1 > b.bytes {
		b.truncated = true
		return
	}
	b.used += len(enc) + 1
	b.recs = append(b.recs, enc)
}

// newer adds rec as newer than those kept (a forward read, oldest first),
// dropping the oldest beyond limit, and beyond the byte budget (then the
// history is truncated). newestFirst must be called once the read is done.
func (b *recordBudget) newer(rec []byte) {
	enc := b.encode(rec)
	if enc == nil {
		return
	}
	b.recs = append(b.recs, enc)
	b.used += len(enc) + 1
	for len(b.recs)-b.head > b.limit || b.used > b.bytes {
		if len(b.recs)-b.head <= b.limit {
			b.truncated = true
		}
		b.used -= len(b.recs[b.head]) + 1
		b.recs[b.head] = nil
		b.head++
	}
	if b.head > len(b.recs)/2 {
		b.recs = append(b.recs[:0], b.recs[b.head:]...)
		b.head = 0
	}
}

// newestFirst ends a forward read: the records kept, newest first.
func (b *recordBudget) newestFirst() {
	b.recs = b.recs[b.head:]
	b.head = 0
	slices.Reverse(b.recs)
}

// values encodes the history's values: {"records":[...]} newest first,
// with "truncated":true when the byte budget cut it short.
func (b *recordBudget) values() json.RawMessage {
	out := make([]byte, 0, len(recordsOpen)+b.used+len(truncatedTag)+len(recordsClose))
	out = append(out, recordsOpen...)
	for i, rec := range b.recs[b.head:] {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, rec...)
	}
	out = append(out, ']')
	if b.truncated {
		out = append(out, truncatedTag...)
	}
	out = append(out, '}')
	return out
}
