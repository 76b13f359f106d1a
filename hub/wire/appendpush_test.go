package wire

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzAppendPush: AppendPush renders, byte for byte, what EncodePush does
// for any service, id and valid JSON values.
func FuzzAppendPush(f *testing.F) {
	for _, s := range []struct{ service, id, values string }{
		{"/push/x", "p1", `{"a":[1,2]}`},
		{"/push/x", "", ``},
		{"/push/x", "id", `null`},
		{"/push/x", "id", ` null `},
		{"/push/x", "id", "{\n  \"k\": 1\n}"},
		{"/push/x", "id", `{"k":"a b"}`},
		{"/push/x", "id", `{"k":"<b>&"}`},
		{"/push/x", "id", `{"k":"\u2028\u2029"}`},
		{"/push/x", "id", "{\"k\":\"\u2028\"}"},
		{"/push/x", "id", `{"k":"\"","j":" "}`},
		{"/push/x", "id", `{"k":"\\"," j ":1}`},
		{"/push/x", "id", "{\"k\":\"\xff\"}"},
		{"/push/<x>", "a&b", `{}`},
		{"/push/\x7f", "\xff", `{}`},
		{"/push/é", "\u2028", `{}`},
		{"/push/x", `"`, `{}`},
	} {
		f.Add(s.service, s.id, []byte(s.values))
	}
	f.Fuzz(func(t *testing.T, service, id string, values []byte) {
		if len(values) > 0 && !json.Valid(values) {
			return // AppendPush is handed decoded values only
		}
		want, werr := EncodePush(service, id, values)
		got, gerr := AppendPush(nil, service, id, values)
		if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("AppendPush(%q, %q, %q) = %q, %v; EncodePush %q, %v", service, id, values, got, gerr, want, werr)
		}
		prefix := []byte("x\n")
		got, _ = AppendPush(bytes.Clone(prefix), service, id, values)
		if werr == nil && !bytes.Equal(got, append(prefix, want...)) {
			t.Fatalf("AppendPush onto %q = %q", prefix, got)
		}
	})
}

// BenchmarkAppendPush renders the load tool's push.
func BenchmarkAppendPush(b *testing.B) {
	values := json.RawMessage(`{"t":1764625000000000000,"s":12345,"p":"` + string(bytes.Repeat([]byte("x"), 86)) + `"}`)
	b.ReportAllocs()
	for range b.N {
		if _, err := AppendPush(nil, "/push/bench", "AbCdEfGhIjKlMnOpQrStUv", values); err != nil {
			b.Fatal(err)
		}
	}
}
