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
