package hub

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/ctlmsg"
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
	msg := ctlmsg.KickMessage(srv.ctl.key, subj, groups)
	ctx, cancel := context.WithTimeout(ctx, kickTimeout)
	defer cancel()
	resp, err := srv.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return wire.Errorf(wire.CodeUnavailable, "device "+sn+" is not connected")
		}
		return natsFailure(err, "device "+sn)
	}
	r, err := ctlmsg.KickAnswer(srv.ctl.key, msg, resp)
	if err != nil {
		srv.ctl.refused.WithLabelValues(ctlBadSig).Inc()
		return wire.Errorf(wire.CodeInternal, err.Error())
	}
	if r.Code != 0 {
		return wire.Errorf(r.Code, r.Msg)
	}
	return nil
}

// deliverKick runs a kick that came on the command subject of device sn.
func (srv *Server) deliverKick(sn string, m *nats.Msg) {
	if m.Reply == "" || !srv.controlOK(m, ctlmsg.KickBinding(m.Subject), "kick") {
		return
	}
	answer := func(code int, msg string) {
		b, _ := json.Marshal(schema.Reply{Code: code, Msg: msg})
		_ = srv.nc.PublishMsg(srv.ctl.reply(m, b))
	}
	var body ctlmsg.KickBody
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
