package hub

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FuzzAppendPresenceEntry: the refresh encoder writes exactly what
// encoding/json writes (without HTML escaping), for any strings and times.
func FuzzAppendPresenceEntry(f *testing.F) {
	odd := []string{
		"", "plain", `q"uote`, `back\slash`, "new\nline\r\t", "\x00\x01\x1f\x7f", "<&>",
		"héllo wörld", "\u2028\u2029", "bad\xffutf8\xc3", "emoji 🤖", "\xed\xa0\x80", "\xe2\x80", "\xf4\x90\x80\x80",
	}
	for i := range odd {
		pick := func(k int) string { return odd[(i+k)%len(odd)] }
		f.Add(pick(0), pick(1), pick(2), pick(3), pick(4), int64(i)*1763798400000, -int64(i))
	}
	f.Add("node-1", "s", "10.1.2.3:45678", "", "", int64(-1<<63), int64(1<<63-1))
	f.Fuzz(func(t *testing.T, node, session, addr, typ, group string, since, lastSeen int64) {
		e := PresenceEntry{Node: node, Session: session, Since: since, LastSeen: lastSeen, Addr: addr, Type: typ, Group: group}
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
	})
}

// FuzzPresenceEntry feeds the hub_presence watcher two puts of one key, as
// any writer of the bucket may make them: whatever the second is, a
// refresh the fast path recognises or not, the view ends up with exactly
// what encoding/json reads from each put it accepts, and a put it cannot
// read changes nothing.
func FuzzPresenceEntry(f *testing.F) {
	const first = `{"node":"n1","session":"s1","since":5,"last_seen":6,"addr":"10.0.0.1:5","type":"dog","group":"g1"}`
	for _, second := range []string{
		`{"node":"n1","session":"s1","since":5,"last_seen":7,"addr":"10.0.0.1:5","type":"dog","group":"g1"}`,
		`{"node":"n1","session":"s2","since":8,"last_seen":8,"addr":"10.0.0.2:5","type":"cat","group":"g2"}`,
		`{"node":"n1","session":"s1","since":5,"last_seen":-7,"addr":"10.0.0.1:5","type":"dog","group":"g1"}`,
		`not json`, `null`, `{}`,
	} {
		f.Add([]byte(first), []byte(second))
	}
	f.Add([]byte(`{"node":"n\u003c1","session":"s","since":1,"last_seen":1,"addr":"<a>"}`),
		[]byte(`{"node":"n<1","session":"s","since":1,"last_seen":2,"addr":"<a>"}`))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		p := &presence{
			local: make(map[string]*localDevice), view: make(map[string]*deviceView),
			nodes: make(map[string]nodeView), names: make(map[string]string),
		}
		for rev, value := range [][]byte{first, second} {
			before := viewOf(p, "R-1")
			p.onEntry(kvEntry{key: "R-1", value: value, rev: uint64(rev + 1), op: jetstream.KeyValuePut}, true)
			after := viewOf(p, "R-1")
			var pe PresenceEntry
			if err := json.Unmarshal(value, &pe); err != nil {
				if after != before {
					t.Fatalf("put %d %q is not an entry (%v), yet the view went from %+v to %+v", rev+1, value, err, before, after)
				}
				continue
			}
			want := entryView{present: true, entry: pe, lastSeen: max(before.lastSeen, pe.LastSeen), typ: before.typ, group: before.group}
			if pe.Type != "" {
				want.typ, want.group = pe.Type, pe.Group
			}
			if after != want {
				t.Fatalf("put %d %q: view %+v, want %+v", rev+1, value, after, want)
			}
		}
	})
}

// entryView is a comparable copy of what the view holds for a device.
type entryView struct {
	present    bool
	entry      PresenceEntry
	lastSeen   int64
	typ, group string
}

func viewOf(p *presence, sn string) entryView {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view[sn]
	if v == nil {
		return entryView{}
	}
	ev := entryView{lastSeen: v.lastSeen, typ: v.typ, group: v.group}
	if v.entry != nil {
		ev.present, ev.entry = true, *v.entry
	}
	return ev
}

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
