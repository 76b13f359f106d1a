package hub

import (
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
)

// kickUser ends every local session of an admin or viewer user.
func (srv *Server) kickUser(user, reason string) {
	subj, err := subjects.UserPush(user)
	if err != nil {
		return
	}
	for _, s := range srv.interest.members(subj, nil) {
		s.Close(wire.CloseKicked, reason)
	}
}

// registryChanged ends the local session of a device whose registry entry
// changed, so that it reconnects with its new type and group (or, with
// RequireRegistered, is refused once removed).
func (srv *Server) registryChanged(sn string, cur *schema.Device) {
	subj, err := subjects.DevicePush(sn)
	if err != nil {
		return
	}
	for _, s := range srv.interest.members(subj, nil) {
		id := s.Identity()
		if id == nil {
			continue
		}
		if cur == nil && !srv.cfg.RequireRegistered {
			continue
		}
		if cur != nil && cur.Type == id.Type && cur.Group == id.Group {
			continue
		}
		s.Close(wire.CloseKicked, wire.ReasonRegistryChanged)
	}
}
