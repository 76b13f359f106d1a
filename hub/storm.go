package hub

import "golang.org/x/time/rate"

// storm is a device session's storm control: token buckets for status
// reports, for normal events, and a separate, larger one for high and
// emergency events, so that a device flooding normal events can never
// crowd out its own emergencies (the urgent bucket is a hard cap that
// still protects the node). Created at a device's first report, so that a
// device that never reports costs nothing.
type storm struct {
	status rate.Limiter
	events rate.Limiter
	urgent rate.Limiter
}

// stormOf returns the session's storm control, creating it. Called from the
// read goroutine only, which owns Session.storm.
func (s *Session) stormOf() *storm {
	if s.storm == nil {
		cfg := &s.srv.cfg
		st := &storm{}
		setLimit(&st.status, cfg.StatusRate, cfg.StatusBurst)
		setLimit(&st.events, cfg.EventRate, cfg.EventBurst)
		setLimit(&st.urgent, cfg.UrgentRate, cfg.UrgentBurst)
		s.storm = st
	}
	return s.storm
}

func (st *storm) allowStatus() bool { return st.status.Allow() }

func (st *storm) allowEvent(level int) bool {
	if level >= priorities["high"] {
		return st.urgent.Allow()
	}
	return st.events.Allow()
}

// stormed counts a report refused by storm control, and logs it at a
// bounded rate across the node.
func (srv *Server) stormed(s *Session, kind string) {
	srv.metrics.stormLimited.WithLabelValues(kind).Inc()
	srv.warnLimitedTo(s.logger(), "storm control: report refused", "kind", kind)
}
