package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		in      string
		code    int
		msgPart string
		rid     string
	}{
		{`{"op":"request","service":"/ping","request_id":"1"}`, 0, "", "1"},
		{`{"op":"request","service":"/ping","args":null}`, 0, "", ""},
		{`{"op":"response","request_id":"hub-1","code":0,"values":{"a":1}}`, 0, "", "hub-1"},
		{`not json`, 400, "malformed JSON", ""},
		{`[1,2]`, 400, "not a JSON object", ""},
		{`"str"`, 400, "not a JSON object", ""},
		{`{"op":"request","service":"/ping","request_id":7}`, 400, "request_id", ""},
		{`{"op":7,"service":"/ping","request_id":"2"}`, 400, "op: must be a string", "2"},
		{`{"service":"/ping","request_id":"3"}`, 400, "op: missing", "3"},
		{`{"op":"subscribe","service":"/ping","request_id":"4"}`, 400, "unknown op", "4"},
		{`{"op":"push","service":"/ping","request_id":"4"}`, 400, "unknown op", "4"},
		{`{"op":"request","request_id":"5"}`, 400, "service: missing", "5"},
		{`{"op":"request","service":9,"request_id":"6"}`, 400, "service: must be a string", "6"},
		{`{"op":"request","service":"/x","args":[1],"request_id":"7"}`, 400, "args: must be an object", "7"},
		{`{"op":"request","service":"/x","args":"s","request_id":"8"}`, 400, "args: must be an object", "8"},
		{`{"op":"response","code":0}`, 400, "request_id", ""},
		{`{"op":"response","request_id":"r","code":"x"}`, 400, "code: must be an integer", "r"},
		{`{"op":"response","request_id":"r","values":[]}`, 400, "values: must be an object", "r"},
		{"{\"op\":\"request\",\"service\":\"/\xff\"}", 400, "UTF-8", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			m, err := Decode([]byte(tc.in))
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
			} else if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.msgPart) {
				t.Fatalf("got %+v, want %d containing %q", err, tc.code, tc.msgPart)
			}
			if m.RequestID != tc.rid {
				t.Fatalf("request_id %q, want %q", m.RequestID, tc.rid)
			}
		})
	}
}

func TestDecodeArgsNamesField(t *testing.T) {
	var a struct {
		TS int64 `json:"ts"`
	}
	err := DecodeArgs(json.RawMessage(`{"ts":"soon"}`), &a)
	if err == nil || !strings.Contains(err.Msg, "ts: must be an integer, not string") {
		t.Fatalf("got %v", err)
	}
	if err := DecodeArgs(nil, &a); err != nil {
		t.Fatalf("absent args: %v", err)
	}
}

func TestLines(t *testing.T) {
	var got []string
	Lines([]byte("a\r\n\n  \nb\nc"), func(l []byte) { got = append(got, string(l)) })
	if strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("got %q", got)
	}
}

func TestEncode(t *testing.T) {
	r := EncodeResponse("/x", "1", CodeOK, "", nil)
	if string(r) != `{"op":"response","service":"/x","request_id":"1","code":0,"msg":"","result":true,"values":{}}` {
		t.Fatalf("got %s", r)
	}
	e := EncodeError("/x", "", Errorf(CodeNotFound, "nope"))
	if !strings.Contains(string(e), `"result":false`) || !strings.Contains(string(e), `"request_id":""`) {
		t.Fatalf("got %s", e)
	}
	p, err := EncodePush("/push/a", "id1", json.RawMessage("{\n \"k\" : [1, 2]\n}"))
	if err != nil || string(p) != `{"op":"push","service":"/push/a","id":"id1","values":{"k":[1,2]}}` {
		t.Fatalf("got %s, %v", p, err)
	}
	if _, err := EncodePush("/push/a", "id", json.RawMessage("{bad")); err == nil {
		t.Fatal("invalid values encoded")
	}
}
