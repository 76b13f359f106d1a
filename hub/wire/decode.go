package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// envelope captures each field raw, so that each can be checked on its own
// and a wrong type gets a message naming the field.
type envelope struct {
	Op        json.RawMessage `json:"op"`
	Service   json.RawMessage `json:"service"`
	RequestID json.RawMessage `json:"request_id"`
	Args      json.RawMessage `json:"args"`
	Code      json.RawMessage `json:"code"`
	Msg       json.RawMessage `json:"msg"`
	Values    json.RawMessage `json:"values"`
}

// Decode parses one message. On failure it still returns whatever request_id
// it could read, so the 400 can be matched by the client.
func Decode(line []byte) (Message, *Error) {
	var m Message
	if !utf8.Valid(line) {
		return m, Errorf(CodeBadRequest, "frame is not valid UTF-8")
	}
	if scanMessage(line, &m) {
		return m, nil
	}
	return decodeJSON(line)
}

// decodeJSON is Decode through encoding/json, for a valid UTF-8 line.
func decodeJSON(line []byte) (Message, *Error) {
	var m Message
	if !IsObject(line) {
		if !json.Valid(line) {
			return m, Errorf(CodeBadRequest, "malformed JSON: not a JSON value")
		}
		return m, Errorf(CodeBadRequest, "message is not a JSON object")
	}
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return m, Errorf(CodeBadRequest, "malformed JSON: "+jsonReason(err))
	}
	// request_id first: every later error can then be answered to it.
	if !IsNull(env.RequestID) {
		if err := json.Unmarshal(env.RequestID, &m.RequestID); err != nil {
			return m, Errorf(CodeBadRequest, "request_id: must be a string")
		}
		m.HasRequestID = true
	}
	if IsNull(env.Op) {
		return m, Errorf(CodeBadRequest, "op: missing")
	}
	if err := json.Unmarshal(env.Op, &m.Op); err != nil {
		return m, Errorf(CodeBadRequest, "op: must be a string")
	}
	switch m.Op {
	case OpRequest, OpResponse:
	default:
		return m, Errorf(CodeBadRequest, fmt.Sprintf("op: unknown op %q (want request or response)", Clip(m.Op)))
	}
	if !IsNull(env.Service) {
		if err := json.Unmarshal(env.Service, &m.Service); err != nil {
			return m, Errorf(CodeBadRequest, "service: must be a string")
		}
	}
	if m.Op == OpRequest {
		if m.Service == "" {
			return m, Errorf(CodeBadRequest, "service: missing")
		}
		if !IsNull(env.Args) {
			if !IsObject(env.Args) {
				return m, Errorf(CodeBadRequest, "args: must be an object")
			}
			m.Args = env.Args
		}
		return m, nil
	}
	// A response (a device answering a command).
	if !m.HasRequestID || m.RequestID == "" {
		return m, Errorf(CodeBadRequest, "request_id: a response needs the request_id of its request")
	}
	if !IsNull(env.Code) {
		if err := json.Unmarshal(env.Code, &m.Code); err != nil {
			return m, Errorf(CodeBadRequest, "code: must be an integer")
		}
	}
	if !IsNull(env.Msg) {
		if err := json.Unmarshal(env.Msg, &m.Msg); err != nil {
			return m, Errorf(CodeBadRequest, "msg: must be a string")
		}
	}
	if !IsNull(env.Values) {
		if !IsObject(env.Values) {
			return m, Errorf(CodeBadRequest, "values: must be an object")
		}
		m.Values = env.Values
	}
	return m, nil
}

// DecodeArgs unmarshals args into v, naming the offending field on a type
// error. Absent args decode as {}.
func DecodeArgs(args json.RawMessage, v any) *Error {
	if IsNull(args) {
		args = EmptyObject
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeBadRequest, "args: "+jsonReason(err))
	}
	return nil
}

// jsonReason turns a decoding error into a message for the client.
func jsonReason(err error) string {
	switch e := err.(type) {
	case *json.UnmarshalTypeError:
		if e.Field != "" {
			return fmt.Sprintf("%s: must be %s, not %s", e.Field, typeName(e.Type.Kind().String()), e.Value)
		}
		return fmt.Sprintf("must be %s, not %s", typeName(e.Type.Kind().String()), e.Value)
	case *json.SyntaxError:
		return fmt.Sprintf("%s at offset %d", e.Error(), e.Offset)
	}
	return err.Error()
}

func typeName(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "a " + kind
}

// Clip keeps a client value echoed in an error message short.
func Clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
