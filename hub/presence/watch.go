package presence

import (
	"context"
	"fmt"
	"github.com/fleethub/fleethub/internal/kvwatch"

	"github.com/nats-io/nats.go/jetstream"
)

// watchKV follows every key of a bucket until ctx ends: apply gets each
// entry, with live false for those present at start, and loaded runs once
// those have been applied, on the watcher's goroutine, before any live
// one. A watcher that ends by itself (its stream was deleted) has the
// bucket checked at once.
func (tr *Tracker) watchKV(ctx context.Context, kv jetstream.KeyValue, apply func(e jetstream.KeyValueEntry, live bool), loaded func()) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("presence: watch %s: %w", kv.Bucket(), err)
	}
	started := tr.cfg.Go(func() {
		kvwatch.Run(ctx, tr.cfg.Conn, w, apply, loaded, func() {
			tr.log.Warn("bucket watcher ended; checking the bucket", "bucket", kv.Bucket())
			tr.stores.Lost(kv.Bucket(), jetstream.ErrStreamNotFound)
		})
	})
	if !started {
		_ = w.Stop()
		return fmt.Errorf("presence: watch %s: %w", kv.Bucket(), context.Canceled)
	}
	return nil
}
