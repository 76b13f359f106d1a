// Package kvwatch runs the loop every follower of a JetStream KV bucket
// needs: the initial values, the end-of-initial marker, then live updates,
// until its context ends or the watch does.
package kvwatch

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Run reads w until ctx ends or w's updates close, then stops w. Each
// entry goes to apply, with live false for the bucket's values at the
// start and true after; loaded is called once, at the end of the initial
// values. ended is called when the updates close while ctx is still live
// (the bucket's stream is gone, or the watch was cut): the caller checks
// the bucket. Run blocks: the caller runs it on a goroutine it owns.
func Run(ctx context.Context, nc *nats.Conn, w jetstream.KeyWatcher, apply func(e jetstream.KeyValueEntry, live bool), loaded, ended func()) {
	defer func() {
		// Stop asks the server to drop the watch; cut off from NATS it
		// would only wait for a timeout, and the subscription dies with
		// the connection anyway.
		if nc.IsConnected() {
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
					ended()
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
}
