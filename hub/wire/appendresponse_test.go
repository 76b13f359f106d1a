package wire

import (
	"bytes"
	"encoding/json"
	"testing"
)

// encodeResponseByJSON is EncodeResponse as json.Marshal alone renders it.
func encodeResponseByJSON(service, requestID string, code int, msg string, values any) []byte {
	r := Response{Op: OpResponse, Service: service, RequestID: requestID, Code: code, Msg: msg, Result: code == CodeOK}
	var b []byte
	var err error
	if r.Values, err = rawValues(values); err == nil {
		b, err = json.Marshal(r)
	}
	if err != nil {
		r.Code, r.Msg, r.Result, r.Values = CodeInternal, "internal error", false, EmptyObject
		b, _ = json.Marshal(r)
	}
	return b
}

// FuzzEncodeResponse: EncodeResponse renders, byte for byte, what
// json.Marshal renders of the Response, for any strings, code and values
// (valid JSON or not), raw or to be marshalled.
func FuzzEncodeResponse(f *testing.F) {
	for _, s := range []struct {
		service, id string
		code        int
		msg, values string
	}{
		{"/auth/device", "1", 0, "", `{"session":"s","role":"device","node":"n","ping_interval_ms":25000,"sn":"R-1","type":"dog","group":"default"}`},
		{"/x", "", 400, "args.sn: missing", ``},
		{"/x", "id", 503, "try again", `null`},
		{"/x", "id", -1, "", ` null `},
		{"/x", "id", 0, "", "{\n  \"k\": 1\n}"},
		{"/x", "id", 0, "", `{"k":"<b>&"}`},
		{"/x", "id", 0, "", "{\"k\":\"\u2028\"}"},
		{"/x", "id", 0, "", "{\"k\":\"\xff\"}"},
		{"/x", "id", 0, "", `{"k":`},
		{"/x", "id", 0, "", `{} {}`},
		{"/x", "id", 0, "", `[1]`},
		{"/<x>", "a&b", 0, "\u2028", `{}`},
		{"/\x7f", "\xff", 0, `"`, `{}`},
	} {
		f.Add(s.service, s.id, s.code, s.msg, []byte(s.values))
	}
	f.Fuzz(func(t *testing.T, service, id string, code int, msg string, values []byte) {
		raw := json.RawMessage(values)
		if len(values) == 0 {
			raw = nil
		}
		if got, want := EncodeResponse(service, id, code, msg, raw), encodeResponseByJSON(service, id, code, msg, raw); !bytes.Equal(got, want) {
			t.Fatalf("EncodeResponse(%q, %q, %d, %q, %q) = %q; json.Marshal %q", service, id, code, msg, values, got, want)
		}
		// Values that are marshalled: a map of the raw values' text.
		m := map[string]string{"v": string(values)}
		if got, want := EncodeResponse(service, id, code, msg, m), encodeResponseByJSON(service, id, code, msg, m); !bytes.Equal(got, want) {
			t.Fatalf("EncodeResponse(%q, %q, %d, %q, %v) = %q; json.Marshal %q", service, id, code, msg, m, got, want)
		}
	})
}

// BenchmarkEncodeResponse renders a device's auth answer.
func BenchmarkEncodeResponse(b *testing.B) {
	values := struct {
		Session string `json:"session"`
		Role    string `json:"role"`
		Node    string `json:"node"`
		Ping    int64  `json:"ping_interval_ms"`
		SN      string `json:"sn"`
	}{"AbCdEfGhIjKlMnOpQrStUv", "device", "node-1", 25000, "R-1"}
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeResponse("/auth/device", "1", CodeOK, "", values)
	}
}

// FuzzAppendString: AppendString renders, byte for byte, what json.Marshal
// renders of a string.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "new\nline", "\x00\x7f", "<&>", "héllo", "\u2028\u2029", "bad\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) {
			t.Fatalf("AppendString(%q) = %s, json.Marshal %s", s, got[1:], want)
		}
	})
}
