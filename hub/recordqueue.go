package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Status and event records are stored off the session's read loop. The
// read loop checks a report and stamps it (so a bad one is answered at
// once, and its time is when it came in), then queues it on the session;
// one writer per session, started when the queue fills and ending when it
// empties, stores the records in the order they came, and answers each
// once its stream has acknowledged it (or with 503 once it cannot be).
// Meanwhile the read loop goes on: a device's answers to commands, pings
// and other requests are handled while its status waits for JetStream,
// for example while a stream elects a new leader after a server died.
//
// A session has at most Config.MaxPendingRecords records queued or being
// stored; one more is refused at once with 429 (counted in
// fleethub_records_refused_total{reason="queue_full"}): waiting instead
// would block the read loop, which is what the queue is for.

// recordWait bounds the time from a record's arrival to its answer: a
// record not stored by then is answered 503. Transient failures (no
// stream leader, a reconnection of the node's connection) are retried
// within it. It stays under the client SDK's 10 s request timeout.
const recordWait = 9 * time.Second

// recordDuplicates is the status and event streams' duplicate window:
// long enough to cover every retry of a record (recordWait), and no
// longer, since the server remembers each record's id for the window.
const recordDuplicates = recordWait + time.Second

// recordAttempt bounds one publish of a record and its acknowledgement.
const recordAttempt = time.Second

// Reasons a record is refused or fails, the labels of recordsRefused.
const (
	recordQueueFull   = "queue_full"   // 429: the session's queue was full
	recordBusDown     = "bus_down"     // 503: the node was cut off from NATS when it came
	recordStopping    = "stopping"     // 503: the node was shutting down
	recordUnavailable = "not_stored"   // 503: JetStream did not take it within recordWait
	recordInvalid     = "invalid_json" // 400: the record did not encode
)

// pendingRecord is a record accepted on a session's read loop and waiting
// to be stored.
type pendingRecord struct {
	msg      wire.Message // the request, for the answer
	subject  string
	stream   string // the own status or event stream (Layout.StatusStream, EventStream)
	data     []byte
	msgID    string    // Nats-Msg-Id: a publish tried again is stored once
	deadline time.Time // answered by then
	values   any       // the answer's values once stored
	// stored runs once the record is stored, before the answer: it
	// publishes the record to watchers.
	stored func(data []byte, seq uint64)
}

// queueRecord queues rec, a record of stream on subject, to be stored in
// order and answered with values once stored. It is called on the read
// loop and never waits for JetStream.
func (srv *Server) queueRecord(s *Session, m *wire.Message, stream, subject string, rec any, values any, stored func([]byte, uint64)) (any, *wire.Error) {
	if srv.busDown() {
		srv.metrics.recordsRefused.WithLabelValues(recordBusDown).Inc()
		return nil, errBusDown
	}
	b, err := json.Marshal(rec)
	if err != nil {
		srv.metrics.recordsRefused.WithLabelValues(recordInvalid).Inc()
		return nil, wire.Errorf(wire.CodeBadRequest, "record is not valid JSON")
	}
	p := &pendingRecord{
		msg: *m, subject: subject, stream: stream, data: b,
		deadline: time.Now().Add(recordWait), values: values, stored: stored,
	}
	s.mu.Lock()
	if s.recordsWaiting >= srv.cfg.MaxPendingRecords {
		n := s.recordsWaiting
		s.mu.Unlock()
		srv.metrics.recordsRefused.WithLabelValues(recordQueueFull).Inc()
		return nil, wire.Errorf(wire.CodeRateLimited, fmt.Sprintf(
			"%d records of this session are waiting to be stored, at most %d: send it again once one is answered", n, srv.cfg.MaxPendingRecords))
	}
	s.recordSeq++
	p.msgID = s.id + "/" + strconv.FormatUint(s.recordSeq, 10)
	s.records = append(s.records, p)
	s.recordsWaiting++
	start := !s.recordsBusy
	s.recordsBusy = true
	s.mu.Unlock()
	srv.metrics.recordsPending.Inc()
	if start && !srv.goTask(func() { srv.writeRecords(s) }) {
		// Shutting down: nothing will store what is queued.
		s.mu.Lock()
		dropped := s.records
		s.records, s.recordsBusy = nil, false
		s.recordsWaiting -= len(dropped)
		s.mu.Unlock()
		srv.metrics.recordsPending.Sub(float64(len(dropped)))
		srv.metrics.recordsRefused.WithLabelValues(recordStopping).Add(float64(len(dropped)))
		return nil, errStopping
	}
	return nil, errAsync
}

// writeRecords is a session's record writer: it stores the queued records
// one at a time, in order, and answers each, until the queue is empty.
// Records queued before the session ended are still stored: the device
// sent them, and its answer is all that is lost.
func (srv *Server) writeRecords(s *Session) {
	for {
		s.mu.Lock()
		if len(s.records) == 0 {
			s.records, s.recordsBusy = nil, false
			s.mu.Unlock()
			return
		}
		p := s.records[0]
		s.records[0] = nil
		s.records = s.records[1:]
		s.mu.Unlock()

		seq, werr := srv.storeRecord(p)
		s.mu.Lock()
		s.recordsWaiting--
		s.mu.Unlock()
		srv.metrics.recordsPending.Dec()
		var values any
		if werr == nil {
			p.stored(p.data, seq)
			values = p.values
		}
		if !s.isClosed() {
			s.reply(&p.msg, values, werr)
		}
	}
}

// storeRecord publishes p to its stream and waits for the stream to
// acknowledge it: a record the device is told is stored is stored.
// Failures that pass (no stream leader during an election, the node's
// connection reconnecting, an acknowledgement that did not come) are
// tried again until p's deadline, with the same Nats-Msg-Id, so that a
// record stored by an attempt whose answer was lost is not stored twice.
func (srv *Server) storeRecord(p *pendingRecord) (uint64, *wire.Error) {
	ctx, cancel := context.WithDeadline(srv.runCtx, p.deadline)
	defer cancel()
	backoff := 50 * time.Millisecond
	healed := false
	var err error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			srv.metrics.recordRetries.Inc()
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return 0, srv.recordFailed(p, err)
			}
			backoff = min(2*backoff, 500*time.Millisecond)
		}
		if srv.busDown() {
			err = nats.ErrConnectionClosed
			if ctx.Err() != nil {
				return 0, srv.recordFailed(p, err)
			}
			continue // wait for the connection to come back
		}
		var ack *jetstream.PubAck
		ack, err = srv.publishRecord(ctx, p)
		if err == nil {
			return ack.Sequence, nil
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) && !healed {
			// No stream took it: it may be gone (a reset store, an
			// operator's mistake), or be electing a leader. The store set
			// creates it again only if it is missing.
			healed = true
			_ = srv.stores.heal(ctx, p.stream)
		}
		if !retryable(err) || ctx.Err() != nil {
			return 0, srv.recordFailed(p, err)
		}
	}
}

func (srv *Server) publishRecord(ctx context.Context, p *pendingRecord) (*jetstream.PubAck, error) {
	actx, cancel := context.WithTimeout(ctx, recordAttempt)
	defer cancel()
	m := nats.NewMsg(p.subject)
	m.Data = p.data
	m.Header.Set(jetstream.MsgIDHeader, p.msgID)
	return srv.js.PublishMsg(actx, m)
}

// retryable reports whether a failed publish may succeed when tried again:
// anything but a refusal of the request itself by JetStream.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 {
		return false
	}
	return true
}

// recordFailed counts and logs a record not stored and returns its answer.
func (srv *Server) recordFailed(p *pendingRecord, err error) *wire.Error {
	if srv.runCtx.Err() != nil {
		srv.metrics.recordsRefused.WithLabelValues(recordStopping).Inc()
		return errStopping
	}
	srv.metrics.recordsRefused.WithLabelValues(recordUnavailable).Inc()
	srv.metrics.storeFailures.Inc()
	srv.log.Warn("record not stored", "subject", p.subject, "err", err)
	return wire.Errorf(wire.CodeUnavailable, "storage unavailable: the record was not stored, send it again")
}
