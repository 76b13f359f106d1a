package hub

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvEntry is a KV entry as a bucket watcher delivers it, written by
// whoever may write the bucket.
type kvEntry struct {
	bucket, key string
	value       []byte
	rev         uint64
	op          jetstream.KeyValueOp
	created     time.Time
}

func (e kvEntry) Bucket() string                  { return e.bucket }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.value }
func (e kvEntry) Revision() uint64                { return e.rev }
func (e kvEntry) Created() time.Time              { return e.created }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return e.op }
