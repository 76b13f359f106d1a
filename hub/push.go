package hub

import (
	"encoding/json"
	"fmt"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nuid"
)

type pushArgs struct {
	Target  map[string]json.RawMessage `json:"target"`
	Service *string                    `json:"service"`
	Values  json.RawMessage            `json:"values"`
	Where   map[string]string          `json:"where"`
}

// parsePushTarget reads a target object with exactly one of sn, user, role,
// type, group or all.
func parsePushTarget(raw map[string]json.RawMessage) (subjects.Target, *wire.Error) {
	if len(raw) != 1 {
		return subjects.Target{}, wire.Errorf(wire.CodeBadRequest, "args.target: must have exactly one of sn, user, role, type, group, all")
	}
	for k, v := range raw {
		if k == "all" {
			var all bool
			if err := json.Unmarshal(v, &all); err != nil || !all {
				return subjects.Target{}, wire.Errorf(wire.CodeBadRequest, "args.target.all: must be true")
			}
			return subjects.Target{Kind: subjects.KindAll}, nil
		}
		t := subjects.Target{Kind: subjects.Kind(k)}
		if err := json.Unmarshal(v, &t.Value); err != nil {
			return t, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.target.%s: must be a string", k))
		}
		if _, err := t.Subject(); err != nil {
			if k != "sn" && k != "user" && k != "role" && k != "type" && k != "group" {
				return t, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.target: unknown kind %q (want sn, user, role, type, group or all)", k))
			}
			return t, wire.Errorf(wire.CodeBadRequest, fmt.Sprintf("args.target.%s: not a valid name", k))
		}
		if t.Kind == subjects.KindRole && t.Value != string(auth.RoleDevice) && t.Value != string(auth.RoleAdmin) && t.Value != string(auth.RoleViewer) {
			return t, wire.Errorf(wire.CodeBadRequest, "args.target.role: must be device, admin or viewer")
		}
		return t, nil
	}
	panic("unreachable")
}

// serveAdminPush publishes a push exactly as a backend would, on the
// target's subject, and answers with its id.
func (srv *Server) serveAdminPush(s *Session, m *wire.Message) (any, *wire.Error) {
	var a pushArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	if a.Target == nil {
		return nil, missing("target")
	}
	if a.Service == nil {
		return nil, missing("service")
	}
	target, werr := parsePushTarget(a.Target)
	if werr != nil {
		return nil, werr
	}
	body := schema.PushBody{Service: *a.Service, Values: a.Values, Where: a.Where, ID: nuid.Next()}
	if err := body.Check(); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "args."+err.Error())
	}
	if werr := srv.mayPush(s.Identity(), target, a.Where); werr != nil {
		return nil, werr
	}
	if err := srv.Publish(target, body); err != nil {
		return nil, errBusDown
	}
	return map[string]string{"id": body.ID}, nil
}

// Publish sends a push on the target's subject, as any backend can. It
// refuses while the node is cut off from NATS rather than buffer a push
// that may never be delivered.
func (srv *Server) Publish(t subjects.Target, body schema.PushBody) error {
	if srv.busDown() {
		return ErrBusDown
	}
	subj, err := t.Subject()
	if err != nil {
		return err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return srv.nc.Publish(subj, b)
}
