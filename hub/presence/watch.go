package presence

import (
	"context"
	"fmt"

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
		defer func() {
			// Stop asks the server to drop the watch; cut off from NATS it
			// would only wait for a timeout, and the subscription dies with
			// the connection anyway.
			if tr.cfg.Conn.IsConnected() {
				_ = w.Stop()
			}
		}()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					if ctx.Err() == nil {
						tr.log.Warn("bucket watcher ended; checking the bucket", "bucket", kv.Bucket())
						tr.stores.Lost(kv.Bucket(), jetstream.ErrStreamNotFound)
					}
					return
				}
				if e == nil { // end of the initial values
					if initial {
						initial = false
						loaded()
					}
					continue
				}
				apply(e, !initial)
			}
		}
	})
	if !started {
		_ = w.Stop()
		return fmt.Errorf("presence: watch %s: %w", kv.Bucket(), context.Canceled)
	}
	return nil
}
