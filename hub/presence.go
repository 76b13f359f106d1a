package hub

import (
	"context"
	"time"

	"github.com/fleethub/fleethub/auth"
	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
)

// presence wires the Server to its presence tracker (hub/presence): the
// tracker keeps device presence in JetStream and knows no Session and no
// Server; what it needs of the hub (its connection, clock, task spawner,
// stores, metrics, and the watchers of each record it stores) it is given
// here.
type presence struct {
	tr *pres.Tracker
}

// presenceCallTimeout bounds one attempt of presence work (see
// presence.CallTimeout).
const presenceCallTimeout = pres.CallTimeout

func openPresence(ctx, runCtx context.Context, srv *Server) (*presence, error) {
	cfg := srv.cfg
	tr, err := pres.Open(ctx, pres.Config{
		JS: srv.js, Conn: srv.nc, JSDomain: cfg.JSDomain, Layout: srv.layout,
		NodeID: cfg.NodeID, NodeAddr: cfg.NodeAddr,
		PresenceTTL: cfg.PresenceTTL, NodeTTL: cfg.NodeTTL, OfflineGrace: cfg.OfflineGrace,
		History: cfg.PresenceHistory, Replicas: cfg.Replicas,
		RunCtx: runCtx, Clock: hubClock{now: cfg.Now}, Log: srv.log, Go: srv.goTask,
		Sessions: srv.SessionCount,
		Stored: func(r schema.PresenceRecord, seq uint64, data []byte) {
			srv.metrics.presence.WithLabelValues(string(r.Reason)).Inc()
			srv.publishWatchID(subjects.WatchPresence, r.Group, r.Type, r.SN, srv.recordPushID('p', seq), data)
		},
		Metrics: presenceMetrics{srv.metrics},
		Stores:  presenceStores{srv.stores},
		Register: func(ctx context.Context, st pres.Store) error {
			s := &store{name: st.Name, stream: st.Stream, create: st.Create, recreated: st.Recreated}
			if st.Follow != nil {
				s.feeds = []*feed{{start: st.Follow}}
			}
			return srv.stores.add(ctx, runCtx, s)
		},
	})
	if err != nil {
		return nil, err
	}
	return &presence{tr: tr}, nil
}

// connected records a device session that has just authenticated (see
// presence.Tracker.Connected): an error means it is not served.
func (p *presence) connected(ctx context.Context, s *Session) error {
	id := s.Identity()
	return p.tr.Connected(ctx, pres.Device{SN: id.SN, Type: id.Type, Group: id.Group, Session: s.id, Addr: s.remote})
}

// disconnected starts the grace of a device session that ended.
func (p *presence) disconnected(s *Session, reason Reason) {
	p.tr.Disconnected(s.Identity().SN, s.id, reason)
}

// known returns a device's type and group as presence has them.
func (p *presence) known(sn string) (typ, group string, ok bool) { return p.tr.Known(sn) }

// stop ends presence upkeep at shutdown.
func (p *presence) stop(ctx context.Context) { p.tr.Stop(ctx) }

// validPresence reports whether a presence record is one a hub could
// have stored: any writer of the bus may publish others, and those do not
// reach admins.
func validPresence(r *PresenceRecord) bool { return r.Reason.Known() && auth.ValidSerial(r.SN) }

// hubClock is Config.Now, with wall-clock timers.
type hubClock struct{ now func() time.Time }

func (c hubClock) Now() time.Time { return c.now() }
func (hubClock) AfterFunc(d time.Duration, f func()) pres.Timer {
	return time.AfterFunc(d, f)
}

// presenceMetrics counts the tracker's work on the hub's metrics.
type presenceMetrics struct{ m *metrics }

func (pm presenceMetrics) Refreshed(n int) { pm.m.presenceWrites.Add(float64(n)) }
func (pm presenceMetrics) Retried(op string, n int) {
	pm.m.presenceRetries.WithLabelValues(op).Add(float64(n))
}
func (pm presenceMetrics) Abandoned(op string, n int) {
	pm.m.presenceAbandoned.WithLabelValues(op).Add(float64(n))
}

// presenceStores hands the tracker's store failures to the store set.
type presenceStores struct{ ss *storeSet }

func (ps presenceStores) Lost(name string, err error) { ps.ss.lost(name, err) }
func (ps presenceStores) Heal(ctx context.Context, name string) error {
	return ps.ss.heal(ctx, name)
}
