package client

import (
	"context"
	"encoding/json"

	"github.com/fleethub/fleethub/hub/wire"
)

// dispatchCommand runs OnCommand for a request from the hub on a goroutine
// of its own and sends the result back with the request's request_id. It
// runs on the reader, so it never waits: without a handler the answer is
// 404, and with every handler slot taken it is 429.
func (c *Client) dispatchCommand(cn *conn, m *inbound) {
	if c.cfg.OnCommand == nil {
		cn.answer(m.Service, m.RequestID, Result{Code: wire.CodeNotFound, Msg: "no command handler"})
		return
	}
	select {
	case c.cmds <- struct{}{}:
	default:
		cn.answer(m.Service, m.RequestID, Result{Code: wire.CodeRateLimited, Msg: "device busy: too many commands in flight"})
		return
	}
	cmd := Command{Service: m.Service, RequestID: m.RequestID, Args: values(m.Args)}
	c.start(func() {
		defer func() { <-c.cmds }()
		res := c.runCommand(cn.ctx, cmd)
		msg := c.encodeResult(cmd, res)
		if err := cn.send(cn.ctx, msg); err != nil {
			c.log.Debug("command answer not sent: the connection ended", "service", cmd.Service)
		}
	})
}

// runCommand calls OnCommand. A panicking handler answers 500 rather than
// take the device's connection down with it.
func (c *Client) runCommand(ctx context.Context, cmd Command) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("command handler panicked", "service", cmd.Service, "panic", p)
			res = Result{Code: wire.CodeInternal, Msg: "command handler failed"}
		}
	}()
	return c.cfg.OnCommand(ctx, cmd)
}

// encodeResult renders the response to cmd. Values that do not marshal to
// a JSON object would make the hub refuse the response, leaving the caller
// to time out; they are answered 500 instead.
func (c *Client) encodeResult(cmd Command, res Result) []byte {
	var raw json.RawMessage
	if res.Values != nil {
		b, err := json.Marshal(res.Values)
		if err != nil || !wire.IsObject(b) {
			c.log.Warn("command handler returned values that are not a JSON object", "service", cmd.Service, "err", err)
			return wire.EncodeResponse(cmd.Service, cmd.RequestID, wire.CodeInternal, "command handler returned invalid values", nil)
		}
		raw = b
	}
	return wire.EncodeResponse(cmd.Service, cmd.RequestID, res.Code, res.Msg, raw)
}

// answer sends an immediate answer from the reader. When even that does not
// fit in the queue the connection is badly backed up; the hub then times
// the command out (408).
func (cn *conn) answer(service, requestID string, res Result) {
	if !cn.trySend(cn.c.encodeResult(Command{Service: service, RequestID: requestID}, res)) {
		cn.c.log.Warn("command answer dropped: outbound queue full", "service", service, "code", res.Code)
	}
}
