package client

import "fmt"

// StateKind is a kind of connection change.
type StateKind int

// The connection changes OnState is told of. Every StateConnecting is
// followed by StateConnected or StateDisconnected; StateClosed comes once,
// last.
const (
	// StateConnecting: an attempt to connect to URL begins.
	StateConnecting StateKind = iota + 1
	// StateConnected: the client is authenticated on URL (Session says
	// as whom, and on which node). Replayed subscriptions follow.
	StateConnected
	// StateDisconnected: the connection ended, or an attempt failed. Err
	// says why and CloseCode is the WebSocket close code (0 when the
	// connection broke without one). The client reconnects unless a
	// StateClosed follows.
	StateDisconnected
	// StateClosed: the client stopped for good: Close was called, or the
	// hub told it not to come back. Err says why, as Client.Err does.
	StateClosed
)

func (k StateKind) String() string {
	switch k {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("StateKind(%d)", int(k))
}

// State is a change of the client's connection.
type State struct {
	Kind StateKind
	// URL is the endpoint concerned ("" for StateClosed).
	URL string
	// Session is the new session (StateConnected).
	Session Session
	// Err says why (StateDisconnected, StateClosed).
	Err error
	// CloseCode is the close code that ended the connection
	// (StateDisconnected): the hub's, 1000 when the client closed it, 0
	// when there was none.
	CloseCode int
}
