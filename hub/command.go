package hub

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// Command limits.
const (
	maxPendingCommands = 256
	maxCommandTimeout  = 60 * time.Second
)

// replyResult turns a reply from a device or backend into an answer,
// passing its code, msg and values through as they are.
func replyResult(r schema.Reply) (any, *wire.Error) {
	if r.Code != wire.CodeOK {
		return nil, &wire.Error{Code: r.Code, Msg: r.Msg, Values: r.Values, Relayed: true}
	}
	return r.Values, nil
}

// cmdReq is a command sent to a local device and not yet answered.
type cmdReq struct {
	srv   *Server
	reply string
	once  sync.Once
	timer *time.Timer
}

func (c *cmdReq) answer(r schema.Reply) {
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		if wire.IsNull(r.Values) {
			r.Values = wire.EmptyObject
		}
		b, err := json.Marshal(r)
		if err != nil {
			b, _ = json.Marshal(schema.Reply{Code: wire.CodeInternal, Msg: "device sent invalid values", Values: wire.EmptyObject})
		}
		if err := c.srv.nc.Publish(c.reply, b); err != nil {
			c.srv.warnLimited("command reply not sent", "err", err)
		}
	})
}

func (c *cmdReq) fail(code int, msg string) { c.answer(schema.Reply{Code: code, Msg: msg}) }

var errNoReply = errors.New("command without reply subject")

// deliverCommand forwards a request on hub.dev.<sn>.cmd to the newest local
// session of the device.
func (srv *Server) deliverCommand(sn string, m *nats.Msg) {
	if m.Header.Get(schema.HeaderKick) != "" {
		srv.deliverKick(sn, m)
		return
	}
	if m.Reply == "" {
		srv.dropPush(dropInvalid, m.Subject, errNoReply)
		return
	}
	var target *Session
	for _, s := range srv.interest.members(m.Subject, nil) {
		id := s.Identity()
		if id == nil {
			continue
		}
		if target == nil || newer(id.AuthAt.UnixNano(), s.id, target.Identity().AuthAt.UnixNano(), target.id) {
			target = s
		}
	}
	req := &cmdReq{srv: srv, reply: m.Reply}
	if target == nil {
		req.fail(wire.CodeUnavailable, "device "+sn+" is not connected")
		return
	}
	var body schema.CommandBody
	if err := json.Unmarshal(m.Data, &body); err != nil {
		req.fail(wire.CodeBadRequest, "command body is not {\"service\",\"args\"} JSON")
		return
	}
	if !subjects.ValidPath(body.Service) {
		req.fail(wire.CodeBadRequest, "service: not a valid service path")
		return
	}
	if !wire.IsNull(body.Args) && !wire.IsObject(body.Args) {
		req.fail(wire.CodeBadRequest, "args: must be an object")
		return
	}
	if g := m.Header.Get(schema.HeaderGroup); g != "" {
		if !auth.CanSee(strings.Split(g, ","), target.Identity().Group) {
			req.fail(wire.CodeForbidden, "device "+sn+" is outside your groups")
			return
		}
	}
	timeout := srv.cfg.CommandTimeout
	if ms, err := strconv.ParseInt(m.Header.Get(schema.HeaderTimeoutMS), 10, 64); err == nil && ms > 0 {
		timeout = min(time.Duration(ms)*time.Millisecond, maxCommandTimeout)
	}
	target.sendCommand(req, body, timeout)
}

// sendCommand sends the request to the device and waits for its response.
func (s *Session) sendCommand(req *cmdReq, body schema.CommandBody, timeout time.Duration) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		req.fail(wire.CodeUnavailable, "device disconnected")
		return
	}
	if len(s.pending) >= maxPendingCommands {
		s.mu.Unlock()
		req.fail(wire.CodeRateLimited, "too many commands pending for this device")
		return
	}
	if s.pending == nil {
		s.pending = make(map[string]*cmdReq)
	}
	s.cmdSeq++
	rid := "hub-" + strconv.FormatUint(s.cmdSeq, 10)
	s.pending[rid] = req
	req.timer = time.AfterFunc(timeout, func() {
		s.takePending(rid)
		req.fail(wire.CodeTimeout, "device did not answer in time")
	})
	s.mu.Unlock()
	if !s.send(wire.EncodeRequest(body.Service, rid, body.Args)) {
		s.takePending(rid)
		req.fail(wire.CodeUnavailable, "device connection is not accepting messages")
	}
}

func (s *Session) takePending(rid string) *cmdReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.pending[rid]
	delete(s.pending, rid)
	return req
}

// handleResponse relays a device's response to the command it answers.
// A response to nothing pending (late, or unknown) is dropped: responses
// are never answered.
func (s *Session) handleResponse(m *wire.Message) {
	if id := s.Identity(); id == nil || id.Role != auth.RoleDevice {
		return
	}
	req := s.takePending(m.RequestID)
	if req == nil {
		s.logger().Debug("response to no pending command", "request_id", m.RequestID)
		return
	}
	req.answer(schema.Reply{Code: m.Code, Msg: m.Msg, Values: m.Values})
}

type commandArgs struct {
	SN        *string         `json:"sn"`
	Service   *string         `json:"service"`
	Args      json.RawMessage `json:"args"`
	TimeoutMS *int64          `json:"timeout_ms"`
}

// serveAdminCommand sends a command to a device wherever it is connected,
// through hub.dev.<sn>.cmd, and answers with the device's own response.
func (srv *Server) serveAdminCommand(s *Session, m *wire.Message) (any, *wire.Error) {
	var a commandArgs
	if werr := wire.DecodeArgs(m.Args, &a); werr != nil {
		return nil, werr
	}
	switch {
	case a.SN == nil:
		return nil, missing("sn")
	case a.Service == nil:
		return nil, missing("service")
	case !auth.ValidSerial(*a.SN):
		return nil, wire.Errorf(wire.CodeBadRequest, "args.sn: invalid serial number")
	case !subjects.ValidPath(*a.Service):
		return nil, wire.Errorf(wire.CodeBadRequest, "args.service: not a valid service path")
	case !wire.IsNull(a.Args) && !wire.IsObject(a.Args):
		return nil, wire.Errorf(wire.CodeBadRequest, "args.args: must be an object")
	}
	timeout := srv.cfg.CommandTimeout
	if a.TimeoutMS != nil {
		if *a.TimeoutMS < 1 || *a.TimeoutMS > maxCommandTimeout.Milliseconds() {
			return nil, wire.Errorf(wire.CodeBadRequest, "args.timeout_ms: must be 1 to 60000")
		}
		timeout = time.Duration(*a.TimeoutMS) * time.Millisecond
	}
	id := s.Identity()
	sn, service, args := *a.SN, *a.Service, a.Args
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		r, werr := srv.Command(ctx, sn, service, args, timeout, id.Groups)
		if werr != nil {
			return nil, werr
		}
		return replyResult(r)
	})
}

// Command sends a command to a device through NATS and returns its reply.
// groups, when not nil, restricts it to devices of those groups.
func (srv *Server) Command(ctx context.Context, sn, service string, args json.RawMessage, timeout time.Duration, groups []string) (schema.Reply, *wire.Error) {
	subj, err := subjects.DeviceCmd(sn)
	if err != nil {
		return schema.Reply{}, wire.Errorf(wire.CodeBadRequest, "invalid serial number")
	}
	if srv.busDown() {
		return schema.Reply{}, errBusDown
	}
	body, _ := json.Marshal(schema.CommandBody{Service: service, Args: args})
	msg := nats.NewMsg(subj)
	msg.Data = body
	msg.Header.Set(schema.HeaderTimeoutMS, strconv.FormatInt(timeout.Milliseconds(), 10))
	if groups != nil {
		msg.Header.Set(schema.HeaderGroup, strings.Join(groups, ","))
	}
	// A little longer than the holder's own timer, so that its 408 (which
	// says the device was reached) wins over ours.
	ctx, cancel := context.WithTimeout(ctx, timeout+250*time.Millisecond)
	defer cancel()
	resp, err := srv.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return schema.Reply{}, wire.Errorf(wire.CodeUnavailable, "device "+sn+" is not connected")
		}
		return schema.Reply{}, natsFailure(err, "device "+sn)
	}
	// The holder's reply is relayed as it is: its values must be an object,
	// as every response's are.
	var r schema.Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil || (!wire.IsNull(r.Values) && !wire.IsObject(r.Values)) {
		return schema.Reply{}, wire.Errorf(wire.CodeInternal, "invalid command reply")
	}
	return r, nil
}
