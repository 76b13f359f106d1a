package hub

import (
	"strings"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Stand-in for the data plane's watch subjects, so that presence records
// reach the admins of other nodes: presence publishes each record it
// stored on hub.watch.<group>.<type>.<sn>.presence, and a node subscribes
// to all of them from the first time one of its sessions asks for the
// presence topic. The data plane replaces this file with subscriptions
// that follow what the node's sessions watch.

// publishWatch sends body, a record of topic just stored, on its watch
// subject. Empty group and type stand as "_".
func (srv *Server) publishWatch(topic, group, typ, sn string, body []byte) {
	tok := func(s string) string {
		if s == "" {
			return "_"
		}
		return s
	}
	parts := []string{"hub", "watch", tok(group), tok(typ), sn, topic}
	for _, p := range parts[2:] {
		if !subjects.ValidToken(p) {
			return
		}
	}
	if err := srv.nc.Publish(strings.Join(parts, "."), body); err != nil {
		srv.warnLimited("watch record not sent", "err", err)
	}
}

// watchPresence subscribes this node to every presence watch subject,
// once.
func (srv *Server) watchPresence() {
	srv.presence.watchOnce.Do(func() {
		_, err := srv.nc.Subscribe("hub.watch.*.*.*.presence", func(m *nats.Msg) {
			srv.presence.onRecord(m.Data, nuid.Next())
		})
		if err != nil {
			srv.log.Warn("presence watch not subscribed", "err", err)
		}
	})
}
