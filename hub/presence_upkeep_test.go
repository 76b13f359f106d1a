package hub

import (
	"math/rand/v2"
	"testing"
)

func TestDueQueueOrder(t *testing.T) {
	var q dueQueue
	for range 1000 {
		q.push(dueItem{at: rand.Int64N(500)})
	}
	last := int64(-1)
	for i := 0; len(q) > 0; i++ {
		if q[0].at < last {
			t.Fatalf("item %d at %d after %d", i, q[0].at, last)
		}
		last = q[0].at
		q.pop()
		if i%3 == 0 {
			q.push(dueItem{at: last + rand.Int64N(100)})
		}
	}
}

func BenchmarkRefreshEncode(b *testing.B) {
	e := PresenceEntry{Node: "node-1", Session: "s-0123456789abcdef", Since: 1763798400000, LastSeen: 1763798500000, Addr: "10.1.2.3:45678", Type: "dog", Group: "g1"}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendPresenceEntry(buf[:0], &e)
	}
}
