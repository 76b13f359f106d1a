package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/ctlmsg"
	"github.com/fleethub/fleethub/internal/cli"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// kickCommand ends a device's session wherever it is connected, as
// /admin/kick does: the kick is signed with the key the master secret
// gives, so only those who hold it (the nodes, their operators) can kick.
var kickCommand = &command{
	name:     "kick",
	synopsis: "SN --master-secret-file FILE | --master-secret S",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		direct := fs.String("master-secret", "", "the nodes' master secret (HUB_MASTER_SECRET)")
		file := fs.String("master-secret-file", "", "read the master secret from this file (a trailing newline is not part of it)")
		return func(args []string) (*job, error) {
			sn, err := serialArg(args)
			if err != nil {
				return nil, err
			}
			secret, err := cli.SecretFromFile("master-secret", *direct, "master-secret-file", *file)
			if err != nil {
				return nil, err
			}
			if secret == "" {
				return nil, errors.New("--master-secret-file (or HUB_MASTER_SECRET, --master-secret) is required: a kick is signed with it")
			}
			subject, err := subjects.DeviceCmd(sn)
			if err != nil {
				return nil, err
			}
			key := auth.ControlKey([]byte(secret))
			return &job{run: func(ctx context.Context, c *client) error {
				return sendKick(ctx, c, sn, subject, key)
			}}, nil
		}
	},
}

func sendKick(ctx context.Context, c *client, sn, subject string, key []byte) error {
	nc, err := c.conn()
	if err != nil {
		return err
	}
	msg := ctlmsg.KickMessage(key, subject, nil)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &deviceError{code: 503, msg: "device " + sn + " is not connected"}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		// A node that cannot verify the signature drops the kick.
		return fmt.Errorf("kick %s: no answer within 2s: is --master-secret the nodes' one?", sn)
	case err != nil:
		return fmt.Errorf("kick %s: %w", sn, err)
	}
	r, err := ctlmsg.KickAnswer(key, msg, resp)
	if err != nil {
		return fmt.Errorf("kick %s: %w (is --master-secret the nodes' one?)", sn, err)
	}
	if r.Code != 0 {
		return &deviceError{code: r.Code, msg: r.Msg}
	}
	return nil
}
