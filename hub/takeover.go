package hub

import (
	"strconv"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// takeover is the body of a hub.ctl.takeover announcement.
type takeover struct {
	SN      string `json:"sn"`
	Session string `json:"session"`
	Node    string `json:"node"`
	AtNS    int64  `json:"at_ns"`
}

// encode renders t as json.Marshal does, byte for byte: every connect
// announces one.
func (t *takeover) encode() []byte {
	b := make([]byte, 0, 64+len(t.SN)+len(t.Session)+len(t.Node))
	b = append(b, `{"sn":`...)
	b = wire.AppendString(b, t.SN)
	b = append(b, `,"session":`...)
	b = wire.AppendString(b, t.Session)
	b = append(b, `,"node":`...)
	b = wire.AppendString(b, t.Node)
	b = append(b, `,"at_ns":`...)
	b = strconv.AppendInt(b, t.AtNS, 10)
	return append(b, '}')
}

// newer reports whether a session authenticated at (at, id) is newer than
// one at (at2, id2). The session id breaks ties, so every node agrees.
func newer(at int64, id string, at2 int64, id2 string) bool {
	if at != at2 {
		return at > at2
	}
	return id > id2
}

// replaceOlder closes the older sessions of the same device: on this node
// at once, on other nodes through an announcement every node hears.
func (srv *Server) replaceOlder(id *Identity, s *Session) {
	t := takeover{SN: id.SN, Session: s.id, Node: srv.cfg.NodeID, AtNS: id.AuthAt.UnixNano()}
	srv.closeOlder(t)
	if err := srv.nc.PublishMsg(srv.ctl.message(subjects.Takeover, t.encode())); err != nil {
		s.logger().Warn("takeover announcement not sent", "err", err)
	}
}

// onTakeover handles an announcement. Only a signed one (by a node) is
// heeded: anyone else could close any device's sessions with it.
func (srv *Server) onTakeover(m *nats.Msg) {
	if !srv.controlOK(m, subjects.Takeover, "takeover") {
		return
	}
	var t takeover
	if err := decodeTakeover(m.Data, &t); err != nil || t.SN == "" {
		srv.warnLimited("bad takeover announcement", "err", err)
		return
	}
	srv.closeOlder(t)
}

// closeOlder closes local sessions of t.SN that are older than t's.
func (srv *Server) closeOlder(t takeover) {
	subj, err := subjects.DevicePush(t.SN)
	if err != nil {
		return
	}
	for _, s := range srv.interest.members(subj, nil) {
		id := s.Identity()
		if id == nil || s.id == t.Session {
			continue
		}
		if newer(t.AtNS, t.Session, id.AuthAt.UnixNano(), s.id) {
			s.logger().Info("session replaced", "by", t.Session, "on", t.Node)
			s.Close(wire.CloseReplaced, "replaced")
		}
	}
}
