package presence

import (
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// kvEntry is a bucket entry as any writer of the bucket may put it.
type kvEntry struct {
	bucket, key string
	value       []byte
	op          jetstream.KeyValueOp
}

func (e kvEntry) Bucket() string                  { return e.bucket }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.value }
func (e kvEntry) Revision() uint64                { return 1 }
func (e kvEntry) Created() time.Time              { return time.Now() }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return e.op }

// FuzzNodeEntries: a liveness entry put in hub_nodes, whatever it holds,
// makes its node live.
func FuzzNodeEntries(f *testing.F) {
	ns := natstest.Run(f)
	tr := openTrackerTB(f, ns, "fz", Config{Clock: newFakeClock()})
	for _, seed := range []string{`{"addr":"127.0.0.1:1","since":1,"sessions":3}`, `{"since":"x"}`, `garbage`, ``} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr.onNode(kvEntry{bucket: "hub_nodes", key: "fz-node", value: data, op: jetstream.KeyValuePut}, true)
		tr.mu.Lock()
		_, live := tr.nodes["fz-node"]
		tr.mu.Unlock()
		if !live {
			t.Fatalf("node entry %q: node not live", data)
		}
	})
}
