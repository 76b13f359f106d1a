package hub

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// followStreams starts the node's consumers of the status and event
// streams, which are stores of their own: created again when found
// missing, and their consumers started anew. Status starts from each
// device's last record, so that views and snapshots have it; events start
// from now. On a stream created again, both start from its first record:
// everything in it is new to this node.
func (srv *Server) followStreams(ctx, runCtx context.Context) error {
	for _, sc := range dataStreams(srv) {
		var start func(ctx context.Context, fresh bool) (<-chan struct{}, error)
		if sc.Name == StreamStatus {
			start = srv.followStatus
		} else {
			start = srv.followEvents
		}
		st := &store{
			name: sc.Name, stream: sc.Name,
			create: func(ctx context.Context) error { return createStream(ctx, srv, sc) },
			feeds:  []*feed{{start: start}},
		}
		if err := srv.stores.add(ctx, runCtx, st); err != nil {
			return err
		}
	}
	return nil
}

func (srv *Server) followStatus(ctx context.Context, fresh bool) (<-chan struct{}, error) {
	caught := make(chan struct{})
	policy := jetstream.DeliverLastPerSubjectPolicy
	statusLive := fresh
	if fresh {
		policy = jetstream.DeliverAllPolicy
	} else {
		info, err := srv.js.Stream(ctx, StreamStatus)
		if err != nil {
			return nil, fmt.Errorf("hub: %s: %w", StreamStatus, err)
		}
		statusLive = info.CachedInfo().State.Msgs == 0
	}
	if statusLive {
		close(caught)
	}
	err := srv.follow(ctx, StreamStatus, policy, func(data []byte, meta *jetstream.MsgMetadata) {
		srv.onStatus(data, statusLive)
		if !statusLive && meta.NumPending == 0 {
			statusLive = true // consumer callbacks run one at a time
			close(caught)
		}
	})
	return caught, err
}

func (srv *Server) followEvents(ctx context.Context, fresh bool) (<-chan struct{}, error) {
	policy := jetstream.DeliverNewPolicy
	if fresh {
		policy = jetstream.DeliverAllPolicy
	}
	loaded := make(chan struct{})
	close(loaded)
	return loaded, srv.follow(ctx, StreamEvents, policy, func(data []byte, meta *jetstream.MsgMetadata) {
		srv.onEvent(data, meta.Sequence.Stream)
	})
}

// follow consumes stream with an ordered consumer until ctx ends.
func (srv *Server) follow(ctx context.Context, stream string, policy jetstream.DeliverPolicy, fn func([]byte, *jetstream.MsgMetadata)) error {
	cons, err := srv.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: policy})
	if err != nil {
		return fmt.Errorf("hub: follow %s: %w", stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		fn(m.Data(), meta)
	})
	if err != nil {
		return fmt.Errorf("hub: follow %s: %w", stream, err)
	}
	srv.goTask(func() {
		<-ctx.Done()
		cc.Stop()
	})
	return nil
}
