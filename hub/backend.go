package hub

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// forwardService sends a request for a service the hub does not serve
// itself to hub.svc.<path>, with the caller's identity in headers, and
// answers with the backend's reply.
func (srv *Server) forwardService(s *Session, m *wire.Message) (any, *wire.Error) {
	if srv.busDown() {
		return nil, errBusDown
	}
	subj, err := subjects.Service(m.Service)
	if err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "service: not a valid service path")
	}
	msg := nats.NewMsg(subj)
	msg.Data = m.Args
	if msg.Data == nil {
		msg.Data = wire.EmptyObject
	}
	id := s.Identity()
	msg.Header.Set(schema.HeaderSession, s.id)
	msg.Header.Set(schema.HeaderRole, string(id.Role))
	msg.Header.Set(schema.HeaderNode, srv.cfg.NodeID)
	if id.Role == auth.RoleDevice {
		msg.Header.Set(schema.HeaderSN, id.SN)
		msg.Header.Set(schema.HeaderGroup, id.Group)
	} else {
		msg.Header.Set(schema.HeaderUser, id.User)
		msg.Header.Set(schema.HeaderGroup, strings.Join(id.Groups, ","))
	}
	service := m.Service
	return srv.runAsync(s, m, func(ctx context.Context) (any, *wire.Error) {
		ctx, cancel := context.WithTimeout(ctx, srv.cfg.ServiceTimeout)
		defer cancel()
		resp, err := srv.svc.request(ctx, srv.nc, msg)
		if err != nil {
			if errors.Is(err, nats.ErrNoResponders) {
				return nil, wire.Errorf(wire.CodeNotFound, "unknown service "+service)
			}
			return nil, natsFailure(err, "service "+service)
		}
		var r schema.Reply
		if err := json.Unmarshal(resp.Data, &r); err != nil || (!wire.IsNull(r.Values) && !wire.IsObject(r.Values)) {
			srv.log.Warn("invalid backend reply", "service", service)
			return nil, wire.Errorf(wire.CodeInternal, "service "+service+" gave an invalid reply")
		}
		return replyResult(r)
	})
}
