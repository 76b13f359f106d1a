package client

import (
	"errors"
	"fmt"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/gorilla/websocket"
)

// Errors of the client. Those that end the client (ErrClosed, ErrReplaced,
// ErrKicked, ErrPolicy, and ErrTokenExpired without a password to log in
// again) are what Err returns once it has stopped, possibly wrapped.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected: the connection ended while a request was waiting
	// for its answer. The hub may or may not have acted on the request;
	// the client reconnects, and the request may be sent again.
	ErrDisconnected = errors.New("client: disconnected")
	// ErrTimeout: no answer came within the request's timeout.
	ErrTimeout = errors.New("client: request timed out")
	// ErrReplaced: a newer session with the same serial number took over
	// (close code 4001). The client does not come back.
	ErrReplaced = errors.New("client: replaced by a newer session")
	// ErrKicked: the hub ended the session (close code 4002) for good: an
	// admin kicked it, or the account changed. A 4002 because a device's
	// registry entry changed is not final: see ErrRegistryChanged.
	ErrKicked = errors.New("client: kicked by the hub")
	// ErrRegistryChanged: the hub ended a device's session because its
	// registry entry changed (close code 4002, reason "registry entry
	// changed"). The client reconnects, with its usual backoff, and the
	// new session carries the new type and group (or the hub refuses it,
	// when the device was removed and registration is required). It is
	// the Err of that StateDisconnected, wrapped with ErrDisconnected; Err
	// never returns it.
	ErrRegistryChanged = errors.New("client: registry entry changed")
	// ErrPolicy: the hub closed the connection for a policy violation
	// (close code 1008: auth timeout, repeated bad requests).
	ErrPolicy = errors.New("client: closed by the hub for a policy violation")
	// ErrTokenExpired: the session's token expired (close code 4003).
	ErrTokenExpired = errors.New("client: token expired")
)

// errNotSent: the connection died before the request was queued, so it can
// go out on the next connection.
var errNotSent = errors.New("client: connection ended before the request was sent")

// Error is a failure answered by the hub (or relayed by it from a device
// or backend): a response with a non-zero code. Request and the helpers
// return it as is, so callers can use errors.As.
type Error struct {
	// Code is the response code: 400, 401, 403, 404, 408, 409, 413, 429,
	// 500 or 503 from the hub, or whatever a device or backend answered.
	Code int
	// Msg says why.
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("client: hub answered %d: %s", e.Code, e.Msg) }

// refusal reports whether an auth failure with this code means the
// credentials (or the request) will never be accepted, so trying again is
// pointless: bad request, refused, forbidden.
func refusal(code int) bool {
	return code == wire.CodeBadRequest || code == wire.CodeUnauthorized || code == wire.CodeForbidden
}

// classify turns why a connection ended (or an attempt failed) into the
// error that requests waiting on it get, and whether the client must stop
// rather than reconnect. It can be applied to its own output.
func (c *Client) classify(cause error) (err error, stop bool) {
	switch {
	case cause == nil:
		return ErrDisconnected, false
	case errors.Is(cause, ErrClosed), errors.Is(cause, ErrReplaced),
		errors.Is(cause, ErrKicked), errors.Is(cause, ErrPolicy):
		return cause, true
	case errors.Is(cause, ErrDisconnected):
		return cause, false
	case errors.Is(cause, ErrTokenExpired):
		return cause, true
	}
	var ce *websocket.CloseError
	if errors.As(cause, &ce) {
		switch ce.Code {
		case wire.CloseReplaced:
			return fmt.Errorf("%w (close %d %q)", ErrReplaced, ce.Code, ce.Text), true
		case wire.CloseKicked:
			if ce.Text == wire.ReasonRegistryChanged {
				// Come back with the new attributes.
				return fmt.Errorf("%w: %w (close %d)", ErrDisconnected, ErrRegistryChanged, ce.Code), false
			}
			return fmt.Errorf("%w (close %d %q)", ErrKicked, ce.Code, ce.Text), true
		case wire.ClosePolicy:
			return fmt.Errorf("%w (close %d %q)", ErrPolicy, ce.Code, ce.Text), true
		case wire.CloseTokenExpired:
			if c.cfg.Login != nil {
				// The password is at hand: log in again.
				return fmt.Errorf("%w: %w", ErrDisconnected, ErrTokenExpired), false
			}
			return fmt.Errorf("%w (close %d)", ErrTokenExpired, ce.Code), true
		}
		return fmt.Errorf("%w: %w", ErrDisconnected, cause), false
	}
	var e *Error
	if errors.As(cause, &e) {
		return cause, refusal(e.Code)
	}
	return fmt.Errorf("%w: %w", ErrDisconnected, cause), false
}

// closeCode is the WebSocket close code that ended a connection: the hub's,
// 1000 when this side closed it, 0 when it broke without one.
func closeCode(cause error) int {
	var ce *websocket.CloseError
	if errors.As(cause, &ce) {
		return ce.Code
	}
	if errors.Is(cause, ErrClosed) {
		return websocket.CloseNormalClosure
	}
	return 0
}
