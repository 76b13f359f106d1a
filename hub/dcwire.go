package hub

import (
	"context"
	"errors"
	"fmt"

	"github.com/fleethub/fleethub/hub/dcs"
	"github.com/nats-io/nats.go"
)

// startDCEngine starts, in data-centre mode, the engine that announces
// this node's data centre, learns the others and keeps the views sourcing
// every one of them (hub/dcs); it runs until runCtx ends, and a task of
// the node waits for it. The announces are signed like every control
// message; one refused is counted in fleethub_control_refused_total too.
func (s *Server) startDCEngine(ctx, runCtx context.Context) error {
	l := s.layout
	if !l.DCMode() {
		return nil
	}
	eng, err := dcs.Start(runCtx, dcs.Config{
		Conn: s.nc, JS: s.js, DC: l.DC, Domain: l.Domain, Node: s.cfg.NodeID,
		Views: dataCentreViews(l, s.cfg),
		Sign:  func(m *nats.Msg) { s.ctl.sign(m, m.Subject) },
		Verify: func(m *nats.Msg) error {
			if reason := s.ctl.check(m, m.Subject); reason != "" {
				s.ctl.refused.WithLabelValues(reason).Inc()
				return errors.New(reason)
			}
			return nil
		},
		Log: s.log, Metrics: s.cfg.Registerer,
		// The directory's feed of the HUB_PRESENCE view may have stalled
		// across the cut (a supercluster's view in the other data
		// centre): started anew at once rather than after nats.go's own
		// back-off.
		OnReturn: func(string) {
			if d := s.dir; d != nil {
				d.Refeed()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("hub: data centre engine: %w", err)
	}
	if !s.goTask(func() {
		<-runCtx.Done()
		eng.Stop()
	}) {
		eng.Stop()
		return errStopping
	}
	s.dcEngine.Store(eng)
	return ctx.Err()
}

// DataCentres are the data centres this node knows of (nil in classic
// mode): its own, and those heard from or sourced by its views.
func (s *Server) DataCentres() []dcs.DC {
	if eng := s.dcEngine.Load(); eng != nil {
		return eng.DCs()
	}
	return nil
}
