package wire

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

var scanSeeds = []string{
	`{"op":"request","service":"/auth/device","request_id":"1","args":{"sn":"R-1","ts":1700000000,"nonce":"n","sig":"00"}}`,
	`{"op":"request","service":"/ping","request_id":"1","args":{}}`,
	`{"op":"request","service":"/ping"}`,
	` { "op" : "request" , "service" : "/x/é" , "request_id" : "" , "args" : { "a" : [ 1 , { "b" : "}\"]" } ] } } `,
	`{"op":"response","request_id":"hub-1","code":0,"msg":"","values":{"a":[1,2.5e3]}}`,
	`{"op":"response","request_id":"hub-1","service":"/cmd","code":-0,"msg":"ok"}`,
	`{"op":"response","request_id":"hub-1","code":999999999999999999,"values":{}}`,
	`{"op":"response","request_id":"hub-1","code":9999999999999999999}`,
	`{"op":"response","request_id":"hub-1","code":1.0}`,
	`{"op":"response","request_id":"hub-1","code":1e2}`,
	`{"op":"response","request_id":"hub-1","code":"1"}`,
	`{"op":"response","request_id":"","code":1}`,
	`{"op":"response","code":1}`,
	`{"op":"response","request_id":"r","args":{}}`,
	`{"op":"request","service":"/x","code":1}`,
	`{"op":"request","service":"/x","values":{}}`,
	`{"op":"request","service":"/x","msg":""}`,
	`{"op":"request","service":"","request_id":"1"}`,
	`{"op":"request","service":"/x","request_id":1}`,
	`{"op":"request","service":"/x","request_id":null}`,
	`{"op":"request","service":"/x","args":null}`,
	`{"op":"request","service":"/x","args":[]}`,
	`{"op":"request","service":"/x","args":"{}"}`,
	`{"op":"request","service":"/\u0078"}`,
	`{"Op":"request","service":"/x"}`,
	`{"op":"request","service":"/x","service":"/y"}`,
	`{"op":"request","service":"/x","extra":1}`,
	`{"op":"push","service":"/x"}`,
	`{"op":"request","service":"/x",}`,
	`{"op":"request","service":"/x"} {}`,
	`{"op":"request","service":"/x","args":{"a":1}`,
	`{}`, `[]`, `null`, ``, ` `, `{"op":7}`,
}

// TestDecodeScanned: the scanner reads the common shapes itself.
func TestDecodeScanned(t *testing.T) {
	for _, s := range scanSeeds[:7] {
		var m Message
		if !scanMessage([]byte(s), &m) {
			t.Errorf("scanner refused %s", s)
		}
	}
	for _, s := range scanSeeds {
		checkScanned(t, []byte(s))
	}
}

func TestDecodeAllocs(t *testing.T) {
	line := []byte(scanSeeds[0])
	// The service, the request id and the args.
	if n := testing.AllocsPerRun(100, func() { _, _ = Decode(line) }); n > 3 {
		t.Fatalf("%v allocations a decode", n)
	}
}

// FuzzDecodeScanned: Decode answers exactly as its encoding/json path
// does, for any line.
func FuzzDecodeScanned(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkScanned)
}

func checkScanned(t *testing.T, line []byte) {
	got, gerr := Decode(line)
	if !utf8.Valid(line) {
		return // refused before either path
	}
	want, werr := decodeJSON(line)
	if (gerr == nil) != (werr == nil) || (gerr != nil && (gerr.Code != werr.Code || gerr.Msg != werr.Msg)) {
		t.Fatalf("%q: error %v; encoding/json: %v", line, gerr, werr)
	}
	if got.Op != want.Op || got.Service != want.Service || got.RequestID != want.RequestID || got.HasRequestID != want.HasRequestID ||
		got.Code != want.Code || got.Msg != want.Msg || !bytes.Equal(got.Args, want.Args) || !bytes.Equal(got.Values, want.Values) ||
		(got.Args == nil) != (want.Args == nil) || (got.Values == nil) != (want.Values == nil) {
		t.Fatalf("%q: %+v; encoding/json: %+v", line, got, want)
	}
	if len(got.Args) > 0 && len(line) > 0 && &got.Args[0] == &line[bytes.Index(line, got.Args)] {
		t.Fatalf("%q: args alias the line", line)
	}
}

// BenchmarkDecode decodes a device's auth request.
func BenchmarkDecode(b *testing.B) {
	line := []byte(scanSeeds[0])
	b.ReportAllocs()
	for b.Loop() {
		if _, werr := Decode(line); werr != nil {
			b.Fatal(werr)
		}
	}
}
