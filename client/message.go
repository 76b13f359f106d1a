package client

import (
	"encoding/json"

	"github.com/fleethub/fleethub/hub/wire"
)

// Response is the hub's answer to a request.
type Response struct {
	// Code is 0 on success; otherwise Request also returns an *Error.
	Code int
	// Msg says why a request failed ("" on success).
	Msg string
	// Values is the answer's values, always a JSON object ({} when there
	// is nothing to say). A device's or backend's failure may carry some.
	Values json.RawMessage
}

// err is the *Error of a failed response, nil on success.
func (r Response) err() error {
	if r.Code != wire.CodeOK {
		return &Error{Code: r.Code, Msg: r.Msg}
	}
	return nil
}

// Push is a message the hub sends unasked.
type Push struct {
	// Service names the push, for example /push/status.
	Service string
	// ID is unique per push; copies of one push (a retry, a presence
	// record seen from two nodes) carry the same ID.
	ID string
	// Values is the push's JSON object.
	Values json.RawMessage
}

// Command is a request the hub sends to a device on behalf of an admin or
// a backend (/cmd/... by convention).
type Command struct {
	// Service is the command's service path.
	Service string
	// RequestID is the hub's id of the request (hub-N); the client answers
	// with it.
	RequestID string
	// Args is the command's JSON object ({} when it has none).
	Args json.RawMessage
}

// Result is a device's answer to a Command. Code, Msg and Values go back to
// whoever sent the command as they are.
type Result struct {
	// Code is 0 for success, or a failure code of the application's
	// choosing (the protocol's codes are a good start: 400, 409, 503...).
	Code int
	// Msg says why a command failed.
	Msg string
	// Values must marshal to a JSON object, or be nil for {}. A
	// json.RawMessage is sent as it is.
	Values any
}

// inbound is any message the hub sends, decoded loosely.
type inbound struct {
	Op        string          `json:"op"`
	Service   string          `json:"service"`
	RequestID string          `json:"request_id"`
	ID        string          `json:"id"`
	Code      int             `json:"code"`
	Msg       string          `json:"msg"`
	Values    json.RawMessage `json:"values"`
	Args      json.RawMessage `json:"args"`
}

// values returns raw, or {} when it is absent or null.
func values(raw json.RawMessage) json.RawMessage {
	if wire.IsNull(raw) {
		return wire.EmptyObject
	}
	return raw
}
