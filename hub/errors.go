package hub

import "errors"

var (
	// ErrQueueFull is returned by Transport.Send when the session's outbound
	// queue is full: the session is a slow consumer.
	ErrQueueFull = errors.New("hub: outbound queue full")
	// ErrClosed is returned by Transport.Send after the session closed.
	ErrClosed = errors.New("hub: session closed")
	// ErrNotStarted is returned by calls that need Start first.
	ErrNotStarted = errors.New("hub: server not started")
)
