package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

const (
	// maxCmdTimeout is the longest wait a node accepts in Hub-Timeout-Ms
	// (it caps larger values); refusing more keeps --timeout honest.
	maxCmdTimeout = 60 * time.Second
	// replyMargin is how much longer than the node's own timer hubctl
	// waits, as hub.(*Server).Command does: the node's 408 (the device was
	// reached but did not answer) should win over hubctl's own.
	replyMargin = 250 * time.Millisecond
)

// cmdCommand sends a command to a device wherever it is connected, through
// hub.dev.<sn>.cmd, and prints the device's values.
var cmdCommand = &command{
	name:     "cmd",
	synopsis: "SN SERVICE JSON [--timeout 5s]",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		timeout := fs.Duration("timeout", 5*time.Second, "how long the device may take to answer, at most 1m")
		return func(args []string) (*job, error) {
			if err := wantArgs(args, "SN", "SERVICE", "JSON"); err != nil {
				return nil, err
			}
			sn, service := args[0], args[1]
			if err := checkSerial(sn); err != nil {
				return nil, err
			}
			if !subjects.ValidPath(service) {
				return nil, fmt.Errorf("SERVICE %q: want a service path like /cmd/move", service)
			}
			cmdArgs, err := jsonObject("JSON", args[2])
			if err != nil {
				return nil, err
			}
			if *timeout < time.Millisecond || *timeout > maxCmdTimeout {
				return nil, fmt.Errorf("--timeout %v: want 1ms to %v", *timeout, maxCmdTimeout)
			}
			subject, err := subjects.DeviceCmd(sn)
			if err != nil {
				return nil, err
			}
			body, err := json.Marshal(schema.CommandBody{Service: service, Args: cmdArgs})
			if err != nil {
				return nil, err
			}
			return &job{
				extra: *timeout + replyMargin,
				run: func(ctx context.Context, c *client) error {
					return sendCommand(ctx, c, sn, subject, body, *timeout)
				},
			}, nil
		}
	},
}

func sendCommand(ctx context.Context, c *client, sn, subject string, body []byte, timeout time.Duration) error {
	nc, err := c.conn()
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subject)
	msg.Data = body
	// The node holding the device runs this timer and answers 408 itself,
	// so the reply says the device was reached.
	msg.Header.Set(schema.HeaderTimeoutMS, strconv.FormatInt(timeout.Milliseconds(), 10))
	ctx, cancel := context.WithTimeout(ctx, timeout+replyMargin)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// No node holds the device: nobody subscribes to its subject.
		return &deviceError{code: 503, msg: "device " + sn + " is not connected"}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return &deviceError{code: 408, msg: "device did not answer in time"}
	case err != nil:
		return fmt.Errorf("command to device %s: %w", sn, err)
	}
	var r schema.Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("command to device %s: invalid reply: %w", sn, err)
	}
	if r.Code != 0 {
		return &deviceError{code: r.Code, msg: r.Msg}
	}
	out := []byte("{}") // a device that answers with no values said nothing more
	if len(bytes.TrimSpace(r.Values)) > 0 && !bytes.Equal(bytes.TrimSpace(r.Values), []byte("null")) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, r.Values); err != nil {
			return fmt.Errorf("command to device %s: invalid values: %w", sn, err)
		}
		out = buf.Bytes()
	}
	_, err = fmt.Fprintf(c.out, "%s\n", out)
	return err
}
