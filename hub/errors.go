package hub

import "errors"

var (
	// ErrQueueFull is returned by Transport.Send when the session's outbound
	// queue is full: the session is a slow consumer.
	ErrQueueFull = errors.New("hub: outbound queue full")
	// ErrClosed is returned by Transport.Send after the session closed.
	ErrClosed = errors.New("hub: session closed")
	// ErrBusDown is returned while the node is cut off from NATS.
	ErrBusDown = errors.New("hub: message bus unavailable")
	// ErrStopped is returned by Start once Shutdown has been called, and
	// by Login before the hub has started.
	ErrStopped = errors.New("hub: not running")
)
