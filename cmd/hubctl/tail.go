package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// recordKind is what tail follows: the records on subject, kept in stream.
type recordKind struct {
	subject, stream string
}

var recordKinds = map[string]recordKind{
	"presence": {subjects.AllPresence, schema.StreamPresence},
	"status":   {subjects.AllDeviceStatus, schema.StreamStatus},
	"event":    {subjects.AllDeviceEvents, schema.StreamEvents},
}

// tailCommand prints the presence, status or event records as they are
// published, each as one line of compact JSON, until interrupted. With
// --since it first prints the records the stream kept from that long ago,
// then goes on live from the same consumer, so no record is printed twice
// or lost in between. A stream that does not exist (yet) has nothing to
// replay: tail then just follows the live records.
var tailCommand = &command{
	name:     "tail",
	synopsis: "presence|status|event [--since DURATION]",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		since := fs.Duration("since", 0, "first replay the stored records of the last DURATION, e.g. 10m")
		return func(args []string) (*job, error) {
			if err := wantArgs(args, "presence|status|event"); err != nil {
				return nil, err
			}
			kind, found := recordKinds[args[0]]
			if !found {
				return nil, fmt.Errorf("unknown record kind %q (want presence, status or event)", args[0])
			}
			if *since < 0 {
				return nil, fmt.Errorf("--since %v: want a positive duration", *since)
			}
			return &job{endless: true, run: func(ctx context.Context, c *client) error {
				return tail(ctx, c, kind, *since)
			}}, nil
		}
	},
}

// tail runs until ctx ends, which is a normal end (status 0).
func tail(ctx context.Context, c *client, kind recordKind, since time.Duration) error {
	nc, err := c.conn()
	if err != nil {
		return err
	}
	if since > 0 {
		msgs, err := replay(ctx, c, nc, kind, time.Now().Add(-since))
		if err != nil {
			return err
		}
		if msgs != nil {
			return follow(ctx, c, kind, msgs)
		}
	}
	sub, err := nc.SubscribeSync(kind.subject)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", kind.subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Make sure the server has the subscription before anything else
	// happens, so that a connection it refuses fails now.
	flushCtx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if err := nc.FlushWithContext(flushCtx); err != nil {
		return ignoreEnd(ctx, fmt.Errorf("subscribe to %s: %w", kind.subject, err))
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return ignoreEnd(ctx, fmt.Errorf("receive %s: %w", kind.subject, err))
		}
		if err := printRecord(c, m.Data); err != nil {
			return err
		}
	}
}

// replay opens an ordered consumer on the kind's stream that starts at
// start and goes on with the live records. It returns nil, nil when the
// stream does not exist.
func replay(ctx context.Context, c *client, nc *nats.Conn, kind recordKind, start time.Time) (jetstream.MessagesContext, error) {
	// Setting up is bounded like any other command; only the tail itself
	// runs unbounded.
	setupCtx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	js, err := c.jetStream(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(setupCtx, kind.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{kind.subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, ignoreEnd(ctx, fmt.Errorf("stream %s: %w", kind.stream, err))
	}
	msgs, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", kind.stream, err)
	}
	return msgs, nil
}

// follow prints the consumer's records until ctx ends.
func follow(ctx context.Context, c *client, kind recordKind, msgs jetstream.MessagesContext) error {
	defer msgs.Stop()
	for {
		m, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			return ignoreEnd(ctx, fmt.Errorf("stream %s: %w", kind.stream, err))
		}
		if err := printRecord(c, m.Data()); err != nil {
			return err
		}
	}
}

// printRecord writes a record as one line of compact JSON, in one write so
// that each line reaches a pipe whole and at once. A body that is not JSON
// is skipped: tail's output is JSON, a line per record.
func printRecord(c *client, data []byte) error {
	var line bytes.Buffer
	if err := json.Compact(&line, data); err != nil {
		return nil
	}
	line.WriteByte('\n')
	_, err := c.out.Write(line.Bytes())
	return err
}

// ignoreEnd turns err into a normal end when ctx has ended: an interrupted
// tail is not a failure.
func ignoreEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
