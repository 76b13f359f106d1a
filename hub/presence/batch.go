package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxBatch is the most subjects LastMessages takes at once: a batched
// direct get answers at most 1,024 messages.
const MaxBatch = 1000

// ErrBatchTooLarge is returned by LastMessages for more than MaxBatch
// subjects.
var ErrBatchTooLarge = errors.New("presence: more subjects than one batched read takes")

// DirectGetSubject is the direct get API subject of stream in JetStream
// domain ("" for the connection's own JetStream).
func DirectGetSubject(domain, stream string) string {
	if domain != "" {
		return "$JS." + domain + ".API.DIRECT.GET." + stream
	}
	return jetstream.DefaultAPIPrefix + "DIRECT.GET." + stream
}

// LastMessages reads the last message of each of subjs in stream, in one
// batched direct get (the stream must allow direct gets, as KV buckets
// do), and calls fn for each subject that has one, in the order the
// server sends them. A subject with no message is left out.
func LastMessages(ctx context.Context, nc *nats.Conn, stream string, subjs []string, fn func(subj string, seq uint64, h nats.Header, data []byte)) error {
	return LastMessagesIn(ctx, nc, "", stream, subjs, fn)
}

// LastMessagesIn is LastMessages on a stream of JetStream domain.
func LastMessagesIn(ctx context.Context, nc *nats.Conn, domain, stream string, subjs []string, fn func(subj string, seq uint64, h nats.Header, data []byte)) error {
	if len(subjs) == 0 {
		return nil
	}
	if len(subjs) > MaxBatch {
		return ErrBatchTooLarge
	}
	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, len(subjs)+1)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{subjs, len(subjs)})
	if err := nc.PublishRequest(DirectGetSubject(domain, stream), inbox, req); err != nil {
		return err
	}
	for {
		select {
		case m := <-msgs:
			switch status := m.Header.Get("Status"); status {
			case "":
			case "204":
				return nil // end of batch
			case "404":
				return nil // none of them has a message
			default:
				return fmt.Errorf("presence: last messages of %s: status %s %s", stream, status, m.Header.Get("Description"))
			}
			seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err != nil {
				return fmt.Errorf("presence: last messages of %s: no sequence", stream)
			}
			fn(m.Header.Get(jetstream.SubjectHeader), seq, m.Header, m.Data)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
