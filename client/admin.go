package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
)

// defaultCommandTimeout is the hub's own default for timeout_ms.
const defaultCommandTimeout = 5 * time.Second

// Subscribe adds subscriptions (/admin/subscribe) and returns the answer's
// values, a snapshot of the matching devices ({"devices":[...]}), which
// also goes to OnSnapshot. args is for example {"devices":["R-1"]},
// {"types":[...]}, {"groups":[...]} or {"all":true}, with optional
// "topics" and "min_priority".
//
// Subscriptions the hub accepted are replayed, in order, on every new
// session after a reconnection. One that fails without an answer
// (ErrDisconnected, ErrTimeout, ctx) may or may not be in force and
// replayed: make it again (subscribing twice is harmless).
func (c *Client) Subscribe(ctx context.Context, args any) (json.RawMessage, error) {
	r, err := c.changeSubs(ctx, "/admin/subscribe", args, false)
	return r.Values, err
}

// Unsubscribe removes exactly what args names (/admin/unsubscribe, same
// args as Subscribe), on the hub and from the subscriptions replayed after
// a reconnection.
func (c *Client) Unsubscribe(ctx context.Context, args any) error {
	_, err := c.changeSubs(ctx, "/admin/unsubscribe", args, true)
	return err
}

// changeSubs sends a subscription change and records it when the hub
// accepts it. The record is made on the reader, as the answer arrives, so
// that a reconnection right after it already replays it.
func (c *Client) changeSubs(ctx context.Context, service string, args any, unsubscribe bool) (Response, error) {
	raw, err := canonical(args)
	if err != nil {
		return Response{}, fmt.Errorf("client: %s: %w", service, err)
	}
	op := newSubOp(raw, unsubscribe)
	return c.request(ctx, service, raw, c.cfg.RequestTimeout, func(r Response) {
		if r.Code != wire.CodeOK {
			return
		}
		c.mu.Lock()
		c.subs.add(op)
		c.mu.Unlock()
		if !unsubscribe {
			c.deliverSnapshot(r.Values)
		}
	})
}

// resubscribe replays the recorded subscription changes on a new
// connection. A change the hub now refuses for good (400, 403, 404, 413:
// the admin lost a group, say) is logged and forgotten; a 429 is retried
// after a pause; any other failure fails the connection, which is then
// tried again.
func (c *Client) resubscribe(ctx context.Context, cn *conn) error {
	c.mu.Lock()
	ops := c.subs.list()
	c.mu.Unlock()
	for _, op := range ops {
		service := "/admin/subscribe"
		if op.unsubscribe {
			service = "/admin/unsubscribe"
		}
		onAnswer := func(r Response) {
			if r.Code == wire.CodeOK && !op.unsubscribe {
				c.deliverSnapshot(r.Values)
			}
		}
		if err := c.replay(ctx, cn, service, op, onAnswer); err != nil {
			return err
		}
	}
	return nil
}

// replay sends one recorded change, retrying it after a pause while the
// hub answers 429.
func (c *Client) replay(ctx context.Context, cn *conn, service string, op *subOp, onAnswer func(Response)) error {
	for try := 1; ; try++ {
		_, err := cn.roundTrip(ctx, service, op.args, c.cfg.RequestTimeout, onAnswer)
		var e *Error
		if err == nil || !errors.As(err, &e) {
			return err
		}
		switch e.Code {
		case wire.CodeRateLimited:
			if try < maxReplayTries && sleepCtx(ctx, backoff(try, 100*time.Millisecond, 2*time.Second, c.randN)) {
				continue
			}
		case wire.CodeBadRequest, wire.CodeForbidden, wire.CodeNotFound, wire.CodeTooLarge:
			c.log.Warn("subscription refused on reconnection, forgotten", "service", service, "code", e.Code, "msg", e.Msg)
			c.mu.Lock()
			c.subs.drop(op)
			c.mu.Unlock()
			return nil
		}
		return fmt.Errorf("client: replay %s at %s: %w", service, cn.url, err)
	}
}

// maxReplayTries bounds the tries of one replayed change answered 429.
const maxReplayTries = 5

// Command sends a command to device sn through the hub (/admin/command)
// and returns the device's answer: its code, msg and values as it gave
// them (a non-zero code also as an *Error). timeout is how long the hub
// waits for the device (1ms to 60s; 0 for the hub's default of 5s), after
// which it answers 408; the client waits that long plus RequestTimeout.
func (c *Client) Command(ctx context.Context, sn, service string, args any, timeout time.Duration) (Response, error) {
	a := map[string]any{"sn": sn, "service": service}
	if args != nil {
		a["args"] = args
	}
	wait := defaultCommandTimeout
	if timeout > 0 {
		a["timeout_ms"] = int64((timeout + time.Millisecond - 1) / time.Millisecond)
		wait = timeout
	}
	return c.request(ctx, "/admin/command", a, wait+c.cfg.RequestTimeout, nil)
}

// Kick ends device sn's session wherever it is connected (/admin/kick):
// the device is closed with 4002 "kicked", and its presence record says
// kicked once its grace passes. An *Error with 503 when the device is not
// connected, 403 outside the admin's groups or for a viewer.
func (c *Client) Kick(ctx context.Context, sn string) error {
	_, err := c.Request(ctx, "/admin/kick", map[string]any{"sn": sn})
	return err
}

// Push publishes a push through the hub (/admin/push) and returns its id,
// which every delivered copy carries. target is exactly one of {"sn":...},
// {"user":...}, {"role":...}, {"type":...}, {"group":...} or {"all":true};
// values may be nil; where, when not nil, narrows the audience to sessions
// whose attributes match every entry.
func (c *Client) Push(ctx context.Context, target map[string]any, service string, values any, where map[string]string) (string, error) {
	a := map[string]any{"target": target, "service": service}
	if values != nil {
		a["values"] = values
	}
	if where != nil {
		a["where"] = where
	}
	r, err := c.Request(ctx, "/admin/push", a)
	if err != nil {
		return "", err
	}
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(r.Values, &v); err != nil {
		return "", fmt.Errorf("client: /admin/push: unreadable answer: %w", err)
	}
	return v.ID, nil
}
