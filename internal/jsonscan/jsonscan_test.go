package jsonscan

import (
	"encoding/json"
	"testing"
)

// FuzzScanner: what PlainString and Int64 accept, they read as
// encoding/json does, and a JSON object Object walks ends where
// encoding/json says it does.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9"`, `"é"`, "\"\xff\"", `"a\"b"`, `0`, `-0`, `01`, `12`, `-9223372036854775808`,
		`9223372036854775808`, `1.5`, `1e3`, `{}`, `{"a":"b","c":"d"}`, `{"a":1 , "b" : 2}`, `{"a":}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := Scanner{D: data}
		if s, ok := p.PlainString(); ok && p.I == len(data) {
			var want string
			if err := json.Unmarshal(data, &want); err != nil || want != string(s) {
				t.Fatalf("PlainString(%q) = %q; encoding/json: %q, %v", data, s, want, err)
			}
		}
		p = Scanner{D: data}
		if n, ok := p.Int64(); ok && p.I == len(data) {
			var want int64
			if err := json.Unmarshal(data, &want); err != nil || want != n {
				t.Fatalf("Int64(%q) = %d; encoding/json: %d, %v", data, n, want, err)
			}
		}
		p = Scanner{D: data}
		got := map[string]string{}
		if p.Object(func(key []byte) bool {
			v, ok := p.PlainString()
			got[string(key)] = string(v)
			return ok
		}) && p.I == len(data) {
			var want map[string]string
			if err := json.Unmarshal(data, &want); err != nil || len(want) != len(got) {
				t.Fatalf("Object(%q) = %v; encoding/json: %v, %v", data, got, want, err)
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("Object(%q) = %v; encoding/json: %v", data, got, want)
				}
			}
		}
	})
}
