package wire

import (
	"bytes"
	"encoding/json"
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
	r := Response{Op: OpResponse, Service: service, RequestID: requestID, Code: code, Msg: msg, Result: code == CodeOK}
	var b []byte
	var err error
	if r.Values, err = rawValues(values); err == nil {
		b, err = json.Marshal(r)
	}
	if err != nil {
		// Only a programmer error (an unmarshalable values type) lands here.
		r.Code, r.Msg, r.Result, r.Values = CodeInternal, "internal error", false, EmptyObject
		b, _ = json.Marshal(r)
	}
	return b
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
