// Package wire holds the envelopes that cross the WebSocket: requests,
// responses and pushes, the response codes and the close codes of the
// protocol (docs/protocol.md). Both the transport-free hub and the
// WebSocket node import it; it imports only the standard library.
package wire

import (
	"bytes"
	"encoding/json"
)

// Ops of the envelope.
const (
	OpRequest  = "request"
	OpResponse = "response"
	OpPush     = "push"
)

// Response codes. 0 is success; the others are the HTTP-like failures the
// protocol lists, and no other code is ever sent by the hub itself.
const (
	CodeOK           = 0
	CodeBadRequest   = 400
	CodeUnauthorized = 401
	CodeForbidden    = 403
	CodeNotFound     = 404
	CodeTimeout      = 408
	CodeConflict     = 409
	CodeTooLarge     = 413
	CodeRateLimited  = 429
	CodeInternal     = 500
	CodeUnavailable  = 503
)

// WebSocket close codes the hub uses.
const (
	ClosePolicy       = 1008 // auth timeout, repeated abuse
	CloseTooLarge     = 1009 // frame over the limit
	CloseInternal     = 1011 // internal error
	CloseRestart      = 1012 // node restarting: reconnect elsewhere
	CloseReplaced     = 4001 // a newer session for the same device
	CloseKicked       = 4002 // ended by an admin or the hub
	CloseTokenExpired = 4003 // the session's token expired
	CloseSlowConsumer = 4008 // outbound queue overflowed
)

// ReasonRegistryChanged is the close reason of a 4002 that ends a device's
// session because its registry entry changed. Unlike every other 4002 it
// asks the device to come back: it reconnects and gets its new attributes.
const ReasonRegistryChanged = "registry entry changed"

// Error is a failure as the client sees it: a code from the table above and
// a human-readable message that never carries internal error text.
type Error struct {
	Code int
	Msg  string
	// Values, when set, go out with the failure (a device's or backend's
	// own answer, relayed as it is).
	Values json.RawMessage
	// Relayed marks a failure that a device or backend gave, not the hub:
	// it does not count against the caller's abuse budget.
	Relayed bool
}

func (e *Error) Error() string { return e.Msg }

// Errorf builds an *Error.
func Errorf(code int, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Message is one decoded client message. RequestID is "" when the sender
// gave none, and HasRequestID tells the two apart.
type Message struct {
	Op           string
	Service      string
	RequestID    string
	HasRequestID bool
	Args         json.RawMessage // an object, or nil when absent or null
	// Response fields, used when a device answers a command.
	Code   int
	Msg    string
	Values json.RawMessage
}

// EmptyObject is the JSON {} used where values or args are absent.
var EmptyObject = json.RawMessage(`{}`)

// Lines splits a frame into its newline-delimited messages, skipping blank
// lines (and a trailing '\r' on each, for clients that write CRLF).
func Lines(frame []byte, fn func(line []byte)) {
	for len(frame) > 0 {
		var line []byte
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			line, frame = frame, nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		fn(line)
	}
}

// IsObject reports whether raw is a JSON object (after leading space).
func IsObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// IsNull reports whether raw is absent or the JSON literal null.
func IsNull(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}
