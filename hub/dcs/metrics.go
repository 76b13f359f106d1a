package dcs

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus metrics. The dc label is bounded by
// MaxDCs.
type metrics struct {
	known, present prometheus.Gauge
	kicks          *prometheus.CounterVec // by dc
	refused        *prometheus.CounterVec // by reason
	viewErrors     *prometheus.CounterVec // by op
	announceErrors prometheus.Counter
}

// Operations on the views that can fail, the labels of
// fleethub_dc_view_errors_total.
const (
	opEnsure = "ensure" // sources added (create or update)
	opKick   = "kick"   // a source dropped and added back
	opCheck  = "check"  // the views' source states read
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		known: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "fleethub", Name: "dc_known",
			Help: "Data centres this node knows of, its own included."}),
		present: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "fleethub", Name: "dc_present",
			Help: "Data centres heard within the last three announce intervals, this node's own included."}),
		kicks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fleethub", Name: "dc_source_kicks_total",
			Help: "Times a data centre's sources were dropped and added back on every view (it came back after a partition, or a source of it stalled or reported an error)."}, []string{"dc"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fleethub", Name: "dc_announces_refused_total",
			Help: "Data centre announces dropped, by reason."}, []string{"reason"}),
		viewErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "fleethub", Name: "dc_view_errors_total",
			Help: "Failed upkeep of the data centre views, by operation (tried again with back-off)."}, []string{"op"}),
		announceErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "fleethub", Name: "dc_announce_errors_total",
			Help: "Announces of this node's data centre that could not be published."}),
	}
	for _, r := range refReasons {
		m.refused.WithLabelValues(r)
	}
	for _, op := range []string{opEnsure, opKick, opCheck} {
		m.viewErrors.WithLabelValues(op)
	}
	if reg == nil {
		return m
	}
	// An engine started again on the same registry (a node's restart in
	// one process) takes over the metrics registered before.
	m.known = register(reg, m.known)
	m.present = register(reg, m.present)
	m.kicks = register(reg, m.kicks)
	m.refused = register(reg, m.refused)
	m.viewErrors = register(reg, m.viewErrors)
	m.announceErrors = register(reg, m.announceErrors)
	return m
}

// register registers c, or returns the collector of the same description
// already registered. Any other refusal is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old
		}
	}
	panic(err)
}
