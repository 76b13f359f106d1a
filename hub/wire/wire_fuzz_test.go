package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode"
)

// The decoders that face a WebSocket client: the frame splitter and the
// envelope decoder, and the encoders whose output a client must be able to
// read back. `make fuzz` runs each target longer; `go test` runs the seeds
// and testdata/fuzz.

// FuzzLines: Lines loses nothing but white space, never hands out a blank
// line or one holding a newline or a trailing '\r', and Join undoes it.
func FuzzLines(f *testing.F) {
	for _, s := range []string{
		"", "\n", "a", "a\nb", "a\r\n\n  \nb\nc", "\r\r\n", "{}\n{}\n", " \t\n\v\f\r",
		"\u00a0\n\u0085\n\u2028", "\xc2\r\n\x85", "a\rb\r\n", "\xff\n\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var lines [][]byte
		Lines(frame, func(l []byte) { lines = append(lines, l) })
		for _, l := range lines {
			switch {
			case len(bytes.TrimSpace(l)) == 0:
				t.Fatalf("blank line %q handed out", l)
			case bytes.IndexByte(l, '\n') >= 0:
				t.Fatalf("line %q holds a newline", l)
			case bytes.HasSuffix(l, []byte{'\r'}):
				t.Fatalf("line %q keeps its trailing CR", l)
			}
		}
		if n := bytes.Count(frame, []byte{'\n'}) + 1; len(lines) > n {
			t.Fatalf("%d lines from a frame with %d", len(lines), n)
		}
		if got, want := nonSpace(bytes.Join(lines, []byte{'\n'})), nonSpace(frame); !bytes.Equal(got, want) {
			t.Fatalf("content changed: lines keep %q of %q", got, want)
		}
		var again [][]byte
		Lines(Join(lines), func(l []byte) { again = append(again, l) })
		if !reflect.DeepEqual(again, lines) {
			t.Fatalf("Lines(Join(lines)) = %q, want %q", again, lines)
		}
	})
}

// nonSpace is b without its white space: what Lines must keep.
func nonSpace(b []byte) []byte { return bytes.Join(bytes.FieldsFunc(b, unicode.IsSpace), nil) }

// FuzzDecode: every failure is a 400 that encodes to one valid line with
// the request_id that could be read, and every message decoded, encoded
// again by the hub's encoder, decodes to the same message.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"request","service":"/ping","request_id":"1","args":{}}`,
		`{"op":"request","service":"/device/status","args":{"location":{"code":0,"msg":"<ok>"}}}`,
		`{"op":"response","request_id":"hub-1","code":0,"msg":"","values":{"a":[1,2.5e3]}}`,
		`{"op":"response","request_id":"x","code":-1,"msg":"\u2028","values":null}`,
		`{"op":"request","service":"/x","request_id":"\ud800","args":{"k":"\u0000"}}`,
		`{"op":"request","op":"response","request_id":"r"}`,
		`{"request_id":"7","op":7}`,
		`  {"op":"request","service":"/a"}  `,
		`[]`, `{`, "\xff", `{"op":null}`, `null`, `"s"`, `{"op":"request","service":"/a","args":[]}`,
		`{"op":"response","request_id":"r","code":1e2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, werr := Decode(in)
		if werr != nil {
			if werr.Code != CodeBadRequest {
				t.Fatalf("failure code %d, want 400", werr.Code)
			}
			r := decodeResponse(t, EncodeError(m.Service, m.RequestID, werr))
			if r.Code != CodeBadRequest || r.Result || r.RequestID != m.RequestID || r.Msg != werr.Msg {
				t.Fatalf("400 encoded as %+v", r)
			}
			return
		}
		switch m.Op {
		case OpRequest:
			if m.Service == "" {
				t.Fatal("request without service accepted")
			}
			checkObject(t, "args", m.Args)
			again, werr := Decode(EncodeRequest(m.Service, m.RequestID, m.Args))
			if werr != nil {
				t.Fatalf("re-encoded request refused: %v", werr)
			}
			if again.Op != OpRequest || again.Service != m.Service || again.RequestID != m.RequestID || !sameJSON(orEmpty(m.Args), again.Args) {
				t.Fatalf("request %+v came back as %+v", m, again)
			}
		case OpResponse:
			if !m.HasRequestID || m.RequestID == "" {
				t.Fatal("response without request_id accepted")
			}
			checkObject(t, "values", m.Values)
			again, werr := Decode(EncodeResponse(m.Service, m.RequestID, m.Code, m.Msg, m.Values))
			if werr != nil {
				t.Fatalf("re-encoded response refused: %v", werr)
			}
			if again.Op != OpResponse || again.Service != m.Service || again.RequestID != m.RequestID ||
				again.Code != m.Code || again.Msg != m.Msg || !sameJSON(orEmpty(m.Values), again.Values) {
				t.Fatalf("response %+v came back as %+v", m, again)
			}
		default:
			t.Fatalf("op %q accepted", m.Op)
		}
	})
}

// FuzzEncode: whatever strings and values the hub hands its encoders, each
// writes one line of valid JSON that reads back to what it was given; Join
// and Lines are inverses on what they write.
func FuzzEncode(f *testing.F) {
	f.Add("/push/a", "id1", 0, "", []byte("{\n \"k\" : [1, 2]\n}"))
	f.Add("/x", "", 404, "no <such> thing\n", []byte(nil))
	f.Add("\xff\u2028", "\x00\"\\", -1, "\xed\xa0\x80", []byte(" null "))
	f.Add("/x", "r", 500, "m", []byte("{bad"))
	f.Add("/x", "r", 0, "m", []byte(`[1]`))
	f.Add("/x", "r", 0, "m", []byte(`{"a":"<&>","b":1e400}`))
	f.Fuzz(func(t *testing.T, service, id string, code int, msg string, values []byte) {
		v := json.RawMessage(values)
		usable := IsNull(values) || json.Valid(values)
		object := IsNull(values) || (json.Valid(values) && IsObject(values))

		r := decodeResponse(t, EncodeResponse(service, id, code, msg, v))
		switch {
		case object:
			if r.Service != roundTrip(service) || r.RequestID != roundTrip(id) || r.Code != code ||
				r.Msg != roundTrip(msg) || r.Result != (code == CodeOK) || !sameJSON(orEmpty(v), r.Values) {
				t.Fatalf("response (%q, %q, %d, %q, %s) read back as %+v", service, id, code, msg, values, r)
			}
		case !usable:
			if r.Code != CodeInternal || r.Result || string(r.Values) != "{}" {
				t.Fatalf("invalid values encoded as %+v", r)
			}
		}

		// Values of any other type are encoded first: a response never
		// claims success with values it could not encode.
		wrapped := decodeResponse(t, EncodeResponse(service, id, code, msg, map[string]any{"v": v}))
		switch {
		case !usable:
			if wrapped.Code != CodeInternal || wrapped.Result || string(wrapped.Values) != "{}" {
				t.Fatalf("values {\"v\":%q} encoded as %+v", values, wrapped)
			}
		case !IsNull(values):
			var back struct{ V json.RawMessage }
			if err := json.Unmarshal(wrapped.Values, &back); err != nil || wrapped.Code != code || !sameJSON(values, back.V) {
				t.Fatalf("values {\"v\":%s} encoded as %+v", values, wrapped)
			}
		}

		push, err := EncodePush(service, id, v)
		if (err == nil) != usable {
			t.Fatalf("EncodePush(%s) error %v", values, err)
		}
		req := EncodeRequest(service, id, v)
		var reqBack Request
		oneLine(t, req, &reqBack)
		if reqBack.Op != OpRequest || reqBack.Service != roundTrip(service) || reqBack.RequestID != roundTrip(id) {
			t.Fatalf("request read back as %+v", reqBack)
		}
		if usable && !sameJSON(orEmpty(v), reqBack.Args) {
			t.Fatalf("request args %s read back as %s", values, reqBack.Args)
		}
		if err != nil {
			return
		}
		var p Push
		oneLine(t, push, &p)
		if p.Op != OpPush || p.Service != roundTrip(service) || p.ID != roundTrip(id) || !sameJSON(orEmpty(v), p.Values) {
			t.Fatalf("push read back as %+v", p)
		}

		msgs := [][]byte{EncodeResponse(service, id, code, msg, v), push, req}
		var got [][]byte
		Lines(Join(msgs), func(l []byte) { got = append(got, l) })
		if !reflect.DeepEqual(got, msgs) {
			t.Fatalf("Lines(Join(msgs)) = %q, want %q", got, msgs)
		}
	})
}

// decodeResponse checks that b is one line of JSON with exactly the fields
// of a response, values an object, and returns it.
func decodeResponse(t *testing.T, b []byte) Response {
	t.Helper()
	var fields map[string]json.RawMessage
	oneLine(t, b, &fields)
	for _, k := range []string{"op", "service", "request_id", "code", "msg", "result", "values"} {
		if _, ok := fields[k]; !ok {
			t.Fatalf("response %s has no %s", b, k)
		}
	}
	if len(fields) != 7 {
		t.Fatalf("response %s has extra fields", b)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("response %s: %v", b, err)
	}
	if r.Op != OpResponse {
		t.Fatalf("response %s has op %q", b, r.Op)
	}
	return r
}

// oneLine checks that b is one line of valid JSON and decodes it into v.
func oneLine(t *testing.T, b []byte, v any) {
	t.Helper()
	if bytes.IndexByte(b, '\n') >= 0 || !json.Valid(b) {
		t.Fatalf("not one line of JSON: %q", b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

// checkObject fails unless raw is absent or a valid JSON object.
func checkObject(t *testing.T, what string, raw json.RawMessage) {
	t.Helper()
	if raw != nil && (!json.Valid(raw) || !IsObject(raw)) {
		t.Fatalf("%s %q accepted: not an object", what, raw)
	}
}

func orEmpty(raw json.RawMessage) json.RawMessage {
	if IsNull(raw) {
		return EmptyObject
	}
	return raw
}

// sameJSON reports whether a and b are the same JSON value, numbers
// compared as written.
func sameJSON(a, b []byte) bool {
	va, okA := decodeAny(a)
	vb, okB := decodeAny(b)
	return okA && okB && reflect.DeepEqual(va, vb)
}

func decodeAny(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

// roundTrip is s as a JSON reader sees it after encoding/json wrote it
// (invalid UTF-8 becomes U+FFFD).
func roundTrip(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}
