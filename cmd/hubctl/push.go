package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nuid"
)

// pushCommand publishes a push exactly as a backend would, on the target's
// subject, and prints its id: the id every delivered copy carries, so the
// operator can find it in a client's log.
var pushCommand = &command{
	name:     "push",
	synopsis: "--to sn:X|user:U|role:R|type:T|group:G|all [--where JSON] SERVICE JSON",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		to := fs.String("to", "", "the audience: sn:X, user:U, role:R, type:T, group:G or all (required)")
		where := fs.String("where", "", `deliver only to sessions matching every field, e.g. {"type":"dance_dog"}`)
		return func(args []string) (*job, error) {
			if err := wantArgs(args, "SERVICE", "JSON"); err != nil {
				return nil, err
			}
			if *to == "" {
				return nil, errors.New("--to is required")
			}
			target, err := subjects.ParseTarget(*to)
			if err != nil {
				return nil, fmt.Errorf("--to %q: want sn:X, user:U, role:R, type:T, group:G or all", *to)
			}
			// Any token is a valid subject, but a session only ever has one
			// of these roles: another would reach nobody, silently.
			if target.Kind == subjects.KindRole && !knownRole(target.Value) {
				return nil, fmt.Errorf("--to %q: role must be device, admin or viewer", *to)
			}
			values, err := jsonObject("JSON", args[1])
			if err != nil {
				return nil, err
			}
			body := schema.PushBody{Service: args[0], Values: values, ID: nuid.Next()}
			if *where != "" {
				// A null would decode to no condition at all, the opposite
				// of what someone typing --where meant.
				if err := json.Unmarshal([]byte(*where), &body.Where); err != nil || body.Where == nil {
					return nil, errors.New(`--where: want a JSON object of strings, e.g. {"group":"sh-01"}`)
				}
			}
			if err := body.Check(); err != nil {
				return nil, err
			}
			subject, err := target.Subject()
			if err != nil {
				return nil, fmt.Errorf("--to %q: %w", *to, err)
			}
			data, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			return &job{run: func(ctx context.Context, c *client) error {
				nc, err := c.conn()
				if err != nil {
					return err
				}
				if err := nc.Publish(subject, data); err != nil {
					return fmt.Errorf("publish on %s: %w", subject, err)
				}
				// A flush is the server's acknowledgement that it has the
				// message; without it, exiting could drop the push.
				if err := nc.FlushWithContext(ctx); err != nil {
					return fmt.Errorf("publish on %s: %w", subject, err)
				}
				_, err = fmt.Fprintln(c.out, body.ID)
				return err
			}}, nil
		}
	},
}

func knownRole(r string) bool {
	switch auth.Role(r) {
	case auth.RoleDevice, auth.RoleAdmin, auth.RoleViewer:
		return true
	}
	return false
}

// jsonObject checks that s is one JSON object and returns it compacted, so
// it travels as typed but on one line.
func jsonObject(what, s string) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", what, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("%s must be a JSON object, like {} or {\"x\":1}", what)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", what, err)
	}
	return buf.Bytes(), nil
}
