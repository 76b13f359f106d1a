package hub

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// The refresh encoder writes exactly what encoding/json writes (without
// HTML escaping), for any strings.
func TestAppendPresenceEntryMatchesEncodingJSON(t *testing.T) {
	odd := []string{
		"", "plain", `q"uote`, `back\slash`, "new\nline\r\t", "\x00\x01\x1f\x7f", "<&>",
		"héllo wörld", "\u2028\u2029", "bad\xffutf8\xc3", "emoji 🤖", "\xed\xa0\x80",
	}
	for i := range 200 {
		pick := func() string { return odd[rand.IntN(len(odd))] + odd[(i+rand.IntN(len(odd)))%len(odd)] }
		e := PresenceEntry{Node: pick(), Session: pick(), Since: rand.Int64(), LastSeen: -rand.Int64N(1e15), Addr: pick(), Type: pick(), Group: pick()}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
		got := appendPresenceEntry([]byte("prefix"), &e)
		if !bytes.Equal(got[len("prefix"):], bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Fatalf("entry %+v:\n got %s\nwant %s", e, got[len("prefix"):], want.Bytes())
		}
	}
}

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
