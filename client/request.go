package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Request sends a request to service and waits for its answer. It is sent
// with a request_id unique to the client, once the client is connected: a
// request made while the client reconnects waits for the connection, for
// as long as ctx allows (or until the client stops: it then fails with
// what Err returns). Once sent, the answer is awaited for at most
// Config.RequestTimeout (ErrTimeout) and while ctx allows.
//
// A non-zero code comes back as an *Error, along with the Response (whose
// Values a device's or backend's failure may fill). A request whose
// connection ends before the answer fails with ErrDisconnected: the hub may
// or may not have acted on it. args may be nil, a json.RawMessage or any
// value that marshals to a JSON object.
func (c *Client) Request(ctx context.Context, service string, args any) (Response, error) {
	return c.request(ctx, service, args, c.cfg.RequestTimeout, nil)
}

// request is Request with the answer's timeout and a hook run on the
// reader when the answer arrives.
func (c *Client) request(ctx context.Context, service string, args any, wait time.Duration, onAnswer func(Response)) (Response, error) {
	raw, err := encodeArgs(args)
	if err != nil {
		return Response{}, fmt.Errorf("client: %s: %w", service, err)
	}
	for {
		cn, err := c.await(ctx)
		if err != nil {
			return Response{}, err
		}
		r, err := cn.roundTrip(ctx, service, raw, wait, onAnswer)
		if errors.Is(err, errNotSent) {
			continue // the connection ended first: the request waits for the next
		}
		return r, err
	}
}

// await returns the live connection, waiting for one while the client
// reconnects. It fails with ctx's error, or why the client stopped.
func (c *Client) await(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ready, stopped := c.cur, c.ready, c.err
		c.mu.Unlock()
		if stopped != nil {
			return nil, stopped
		}
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ready:
		case <-c.ctx.Done(): // c.err is set before the context ends
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// encodeArgs marshals a request's args, which must be a JSON object (or
// nothing).
func encodeArgs(args any) (json.RawMessage, error) {
	if args == nil {
		return nil, nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encode args: %w", err)
	}
	if string(b) == "null" {
		return nil, nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("args must be a JSON object")
	}
	return b, nil
}
