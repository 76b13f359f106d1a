package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Response is the envelope of an answer. Values is always an object on the
// wire ({} when there is nothing to say), so clients can index it freely.
type Response struct {
	Op        string          `json:"op"`
	Service   string          `json:"service"`
	RequestID string          `json:"request_id"`
	Code      int             `json:"code"`
	Msg       string          `json:"msg"`
	Result    bool            `json:"result"`
	Values    json.RawMessage `json:"values"`
}

// Push is the envelope of a push.
type Push struct {
	Op      string          `json:"op"`
	Service string          `json:"service"`
	ID      string          `json:"id"`
	Values  json.RawMessage `json:"values"`
}

// Request is the envelope of a request the hub sends (a command to a device).
type Request struct {
	Op        string          `json:"op"`
	Service   string          `json:"service"`
	RequestID string          `json:"request_id"`
	Args      json.RawMessage `json:"args"`
}

// EncodeResponse renders a response as one line of JSON. values may be nil,
// a json.RawMessage or any value encoding/json can marshal to an object.
func EncodeResponse(service, requestID string, code int, msg string, values any) []byte {
	raw, err := rawValues(values)
	if err == nil {
		if b, ok := appendResponse(service, requestID, code, msg, raw); ok {
			return b
		}
	}
	r := Response{Op: OpResponse, Service: service, RequestID: requestID, Code: code, Msg: msg, Result: code == CodeOK, Values: raw}
	var b []byte
	if err == nil {
		b, err = json.Marshal(r)
	}
	if err != nil {
		// Only a programmer error (an unmarshalable values type) lands here.
		r.Code, r.Msg, r.Result, r.Values = CodeInternal, "internal error", false, EmptyObject
		b, _ = json.Marshal(r)
	}
	return b
}

// The parts of a response as json.Marshal renders Response, around its
// variable fields.
const (
	respHead      = `{"op":"response","service":"`
	respRequestID = `","request_id":"`
	respCode      = `","code":`
	respMsg       = `,"msg":"`
	respOK        = `","result":true,"values":`
	respFailed    = `","result":false,"values":`
	respOverrun   = len(respHead) + len(respRequestID) + len(respCode) + len(respMsg) + len(respFailed) + 1 + 20
)

// appendResponse renders, in the common case, the bytes json.Marshal
// renders of the Response: service, request id and message plain strings,
// and values valid JSON that json.Marshal would copy as it is. It reports
// false in any other case, which json.Marshal then renders.
func appendResponse(service, requestID string, code int, msg string, values json.RawMessage) ([]byte, bool) {
	if !plainString(service) || !plainString(requestID) || !plainString(msg) || !compactAsIs(values) || !json.Valid(values) {
		return nil, false
	}
	b := make([]byte, 0, respOverrun+len(service)+len(requestID)+len(msg)+len(values))
	b = append(b, respHead...)
	b = append(b, service...)
	b = append(b, respRequestID...)
	b = append(b, requestID...)
	b = append(b, respCode...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, respMsg...)
	b = append(b, msg...)
	if code == CodeOK {
		b = append(b, respOK...)
	} else {
		b = append(b, respFailed...)
	}
	b = append(b, values...)
	return append(b, '}'), true
}

// EncodeError renders a failure response.
func EncodeError(service, requestID string, e *Error) []byte {
	var values any
	if e.Values != nil {
		values = e.Values
	}
	return EncodeResponse(service, requestID, e.Code, e.Msg, values)
}

// EncodePush renders a push once; the same bytes go to every recipient.
// values must be a JSON object; it is compacted so that the frame stays one
// line of newline-delimited JSON.
func EncodePush(service, id string, values json.RawMessage) ([]byte, error) {
	if IsNull(values) {
		values = EmptyObject
	}
	return json.Marshal(Push{Op: OpPush, Service: service, ID: id, Values: values})
}

// EncodeRequest renders a request the hub sends to a device.
func EncodeRequest(service, requestID string, args json.RawMessage) []byte {
	if IsNull(args) {
		args = EmptyObject
	}
	b, err := json.Marshal(Request{Op: OpRequest, Service: service, RequestID: requestID, Args: args})
	if err != nil {
		b, _ = json.Marshal(Request{Op: OpRequest, Service: service, RequestID: requestID, Args: EmptyObject})
	}
	return b
}

// rawValues encodes values; an error is never hidden behind {}, which
// would answer success without what the handler meant to send.
func rawValues(v any) (json.RawMessage, error) {
	switch x := v.(type) {
	case nil:
		return EmptyObject, nil
	case json.RawMessage:
		if IsNull(x) {
			return EmptyObject, nil
		}
		return x, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if IsNull(b) {
		return EmptyObject, nil
	}
	return b, nil
}

// Join packs several encoded messages into one frame, newline-delimited.
func Join(msgs [][]byte) []byte {
	if len(msgs) == 1 {
		return msgs[0]
	}
	return bytes.Join(msgs, []byte{'\n'})
}

// pushHead and the other parts below are a push frame as json.Marshal
// renders Push, around its three variable fields.
const (
	pushHead    = `{"op":"push","service":"`
	pushID      = `","id":"`
	pushValues  = `","values":`
	pushOverrun = len(pushHead) + len(pushID) + len(pushValues) + 1
)

// AppendPush appends to dst the frame EncodePush renders, byte for byte,
// and returns it. values must be valid JSON (as decoded from a push body):
// it is not checked again when it needs no rewriting. Plain service and
// id strings and compact values with nothing to escape, the common case,
// are copied as they are; anything else is rendered by EncodePush.
func AppendPush(dst []byte, service, id string, values json.RawMessage) ([]byte, error) {
	if IsNull(values) {
		values = EmptyObject
	}
	if !plainString(service) || !plainString(id) || !compactAsIs(values) {
		b, err := EncodePush(service, id, values)
		if err != nil {
			return dst, err
		}
		return append(dst, b...), nil
	}
	if dst == nil {
		dst = make([]byte, 0, PushSize(service, id, values))
	}
	dst = append(dst, pushHead...)
	dst = append(dst, service...)
	dst = append(dst, pushID...)
	dst = append(dst, id...)
	dst = append(dst, pushValues...)
	dst = append(dst, values...)
	return append(dst, '}'), nil
}

// PushSize is the length of the frame AppendPush renders in the common
// case, for sizing its buffer.
func PushSize(service, id string, values json.RawMessage) int {
	return pushOverrun + len(service) + len(id) + len(values)
}

// AppendString appends s as json.Marshal renders a string, byte for byte:
// a plain one (the common case) as it is, between quotes, and any other
// through json.Marshal.
func AppendString(dst []byte, s string) []byte {
	if plainString(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string cannot fail
	return append(dst, b...)
}

// plainString reports whether json.Marshal renders s as it is, between
// quotes: printable ASCII with nothing it escapes (its HTML escaping
// included).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if byteClass[s[i]] != classPlain {
			return false
		}
	}
	return true
}

// compactAsIs reports whether json.Marshal copies the valid JSON raw as it
// is: no space outside strings to compact away, and nothing it escapes
// (<, >, & and U+2028, U+2029, in or out of strings).
func compactAsIs(raw []byte) bool {
	in := false
	for i := 0; i < len(raw); i++ {
		switch byteClass[raw[i]] {
		case classPlain, classOther:
		case classQuote:
			in = !in
		case classBackslash:
			if in {
				i++ // the escaped byte cannot end the string
			}
		case classSpace:
			if !in {
				return false
			}
		case classEscaped:
			return false
		case classE2:
			if i+2 < len(raw) && raw[i+1] == 0x80 && raw[i+2]&^1 == 0xA8 {
				return false
			}
		}
	}
	return true
}

// Byte classes for plainString and compactAsIs.
const (
	classPlain     = iota // printable ASCII that json.Marshal copies
	classOther            // control bytes and bytes from 0x7f up, but 0xE2
	classQuote            // "
	classBackslash        // \
	classSpace            // JSON white space
	classEscaped          // <, > and &, which json.Marshal escapes everywhere
	classE2               // the first byte of U+2028 and U+2029
)

var byteClass = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c == '"':
			t[c] = classQuote
		case c == '\\':
			t[c] = classBackslash
		case c == ' ', c == '\t', c == '\n', c == '\r':
			t[c] = classSpace
		case c == '<', c == '>', c == '&':
			t[c] = classEscaped
		case c == 0xE2:
			t[c] = classE2
		case c < 0x20 || c >= 0x7f:
			t[c] = classOther
		}
	}
	return t
}()
