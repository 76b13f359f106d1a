package presence

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/fleethub/fleethub/hub/schema"
)

// FuzzAppendEntry: the refresh encoder writes exactly what
// encoding/json writes (without HTML escaping), for any strings and times.
func FuzzAppendEntry(f *testing.F) {
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
		e := schema.PresenceEntry{Node: node, Session: session, Since: since, LastSeen: lastSeen, Addr: addr, Type: typ, Group: group}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
		got := AppendEntry([]byte("prefix"), &e)
		if !bytes.Equal(got[len("prefix"):], bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Fatalf("entry %+v:\n got %s\nwant %s", e, got[len("prefix"):], want.Bytes())
		}
	})
}

// FuzzAppendRecord: a presence record is appended exactly as json.Marshal
// renders it, for any strings, state and time.
func FuzzAppendRecord(f *testing.F) {
	f.Add("R-1", "dog", "default", true, "connected", "node-1", int64(1764625000000))
	f.Add("", "", "", false, "", "", int64(-1<<63))
	f.Add(`q"uote`, `back\slash`, "<&>", true, "new\nline", "héllo", int64(1<<63-1))
	f.Add("\u2028", "\x7f", "bad\xff", false, "\x00", "emoji 🤖", int64(0))
	f.Fuzz(func(t *testing.T, sn, typ, group string, online bool, reason, node string, at int64) {
		r := schema.PresenceRecord{SN: sn, Type: typ, Group: group, Online: online, Reason: schema.Reason(reason), Node: node, At: at}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendRecord([]byte("prefix"), &r); !bytes.Equal(got[len("prefix"):], want) {
			t.Fatalf("record %+v:\n got %s\nwant %s", r, got[len("prefix"):], want)
		}
	})
}
