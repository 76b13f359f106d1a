package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// /admin/kick ends a device's session wherever it is connected. The kick
// travels on the device's command subject (hub.dev.<sn>.cmd, which the
// node holding the device already follows: no subscription more per
// device) with the Hub-Kick header, signed as a control message: a
// backend may send commands to a device, but only a node can kick it. The
// holder checks the admin's groups against the session's, closes every
// local session of the device with 4002 "kicked", and answers, signed.

// kickTimeout bounds waiting for the holder's answer.
const kickTimeout = 2 * time.Second

// reasonKicked is the close reason of an admin's kick.
const reasonKicked = "kicked"

type kickArgs struct {
	SN *string `json:"sn"`
}

// kickBody is a kick's signed body.
type kickBody struct {
	Groups []string `json:"groups,omitempty"` // the admin's; nil: every group
	All    bool     `json:"all,omitempty"`    // no group restriction
}

// kickBinding is what a kick on subj is signed for: not the subject alone,
// so that no other control message on it could pass for a kick.
func kickBinding(subj string) string { return "kick " + subj }

func (srv *Server) serveAdminKick(s *Session, m *wire.Message) (any, *wire.Error) {
	var a kickArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	switch {
	case a.SN == nil:
		return nil, missing("sn")
	case !auth.ValidSerial(*a.SN):
		return nil, wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
	}
	sn, groups := *a.SN, s.Identity().Groups
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		if werr := srv.Kick(ctx, sn, groups); werr != nil {
			return nil, werr
		}
		return map[string]any{"sn": sn}, nil
	})
}

// Kick ends the sessions of device sn wherever they are, with 4002
// "kicked". groups, when not nil, restricts it to devices of those groups
// (403 otherwise); 503 when the device is not connected.
func (srv *Server) Kick(ctx context.Context, sn string, groups []string) *wire.Error {
	subj, err := subjects.DeviceCmd(sn)
	if err != nil {
		return wire.Errorf(wire.CodeBadRequest, "invalid serial number")
	}
	if srv.busDown() {
		return errBusDown
	}
	msg := KickMessage(srv.ctl.key, subj, groups)
	ctx, cancel := context.WithTimeout(ctx, kickTimeout)
	defer cancel()
	resp, err := srv.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return wire.Errorf(wire.CodeUnavailable, "device "+sn+" is not connected")
		}
		return natsFailure(err, "device "+sn)
	}
	r, err := KickAnswer(srv.ctl.key, msg, resp)
	if err != nil {
		srv.ctl.refused.WithLabelValues(ctlBadSig).Inc()
		return wire.Errorf(wire.CodeInternal, err.Error())
	}
	if r.Code != 0 {
		return wire.Errorf(r.Code, r.Msg)
	}
	return nil
}

// KickMessage is the kick of the device whose command subject is subj,
// signed with the control key (auth.ControlKey of the master secret), as
// a node and `hubctl kick` send it; groups, when not nil, restricts it to
// devices of those groups.
func KickMessage(controlKey []byte, subj string, groups []string) *nats.Msg {
	body, _ := json.Marshal(kickBody{Groups: groups, All: groups == nil})
	msg := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderKick, "1")
	signControl(controlKey, msg, kickBinding(subj))
	return msg
}

// KickAnswer checks that resp, the answer to the kick req, is signed by a
// node (with the control key, bound to req), and returns it: Code 0 when
// the device was kicked.
func KickAnswer(controlKey []byte, req, resp *nats.Msg) (schema.Reply, error) {
	if reason := checkControl(controlKey, resp, auth.ReplyBinding(req.Header.Get(schema.HeaderSig))); reason != "" {
		return schema.Reply{}, fmt.Errorf("the kick's answer is not signed by a node (%s)", reason)
	}
	var r schema.Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return schema.Reply{}, errors.New("invalid kick answer")
	}
	return r, nil
}

// deliverKick runs a kick that came on the command subject of device sn.
func (srv *Server) deliverKick(sn string, m *nats.Msg) {
	if m.Reply == "" || !srv.controlOK(m, kickBinding(m.Subject), "kick") {
		return
	}
	answer := func(code int, msg string) {
		b, _ := json.Marshal(schema.Reply{Code: code, Msg: msg})
		_ = srv.nc.PublishMsg(srv.ctl.reply(m, b))
	}
	var body kickBody
	if err := json.Unmarshal(m.Data, &body); err != nil {
		answer(wire.CodeBadRequest, "kick body is not {\"groups\"} JSON")
		return
	}
	var targets []*Session
	for _, s := range srv.interest.members(m.Subject, nil) {
		id := s.Identity()
		if id == nil {
			continue
		}
		if !body.All && !auth.CanSee(body.Groups, id.Group) {
			answer(wire.CodeForbidden, "device "+sn+" is outside your groups")
			return
		}
		targets = append(targets, s)
	}
	if len(targets) == 0 {
		answer(wire.CodeUnavailable, "device "+sn+" is not connected")
		return
	}
	for _, s := range targets {
		s.Close(wire.CloseKicked, reasonKicked)
	}
	answer(0, "kicked")
}
