package hub

import "github.com/prometheus/client_golang/prometheus"

// metrics are the hub's Prometheus metrics. Labels stay low-cardinality:
// roles, known service names, codes and typed reasons, never a device.
type metrics struct {
	connections     prometheus.Gauge
	sessions        *prometheus.GaugeVec
	interests       prometheus.Gauge
	requests        *prometheus.CounterVec
	pushesDelivered prometheus.Counter
	pushesDropped   *prometheus.CounterVec
	slowConsumers   prometheus.Counter
	abuseCloses     prometheus.Counter
	// Device responses to commands not handled: over the rate limit.
	responsesDropped prometheus.Counter
	authFailures     *prometheus.CounterVec
	presence         *prometheus.CounterVec
	presenceWrites   prometheus.Counter
	storeFailures    prometheus.Counter
	// Status and event records refused or not stored, by reason; waiting
	// to be stored; publishes tried again (recordqueue.go).
	recordsRefused  *prometheus.CounterVec
	recordsPending  prometheus.Gauge
	recordRetries   prometheus.Counter
	stormLimited    *prometheus.CounterVec
	statusCoalesced prometheus.Counter
	fanout          prometheus.Histogram
	pushesOut       *prometheus.CounterVec
	pushesOutBy     map[string]prometheus.Counter // pushesOut's children, resolved once
	// admissionRefused counts expensive requests refused by admission.
	admissionRefused *prometheus.CounterVec

	storesRecreated   *prometheus.CounterVec
	storeHealFailures *prometheus.CounterVec
	storeFeedRestarts *prometheus.CounterVec
	storesMissing     prometheus.Gauge
	presenceRetries   *prometheus.CounterVec
	presenceAbandoned *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns = "fleethub"
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections", Help: "Open connections, authenticated or not.",
		}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "sessions", Help: "Authenticated sessions by role.",
		}, []string{"role"}),
		interests: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "interests", Help: "NATS subscriptions held for local sessions' interests.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total", Help: "Client requests answered, by service and code.",
		}, []string{"service", "code"}),
		pushesDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "pushes_delivered_total", Help: "Push frames queued to sessions.",
		}),
		pushesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "pushes_dropped_total", Help: "Pushes not delivered, by reason.",
		}, []string{"reason"}),
		responsesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "responses_dropped_total", Help: "Device answers to commands not handled because the session was over its rate limit.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "slow_consumers_total", Help: "Sessions closed because their outbound queue overflowed.",
		}),
		abuseCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "abuse_closes_total", Help: "Sessions closed for repeated bad requests.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_failures_total", Help: "Refused authentications by reason (replay counts replayed device signatures).",
		}, []string{"reason"}),
		presence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "presence_transitions_total", Help: "Presence records this node stored, by reason.",
		}, []string{"reason"}),
		presenceWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "presence_refreshes_total", Help: "Presence entries this node refreshed.",
		}),
		storeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "record_store_failures_total", Help: "Status and event records JetStream did not take (answered 503).",
		}),
		recordsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "records_refused_total", Help: "Status and event records refused or not stored, by reason (queue_full 429, bus_down, stopping, not_stored 503, invalid_json 400).",
		}, []string{"reason"}),
		recordsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "records_pending", Help: "Status and event records accepted and waiting for their stream's acknowledgement.",
		}),
		recordRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "record_store_retries_total", Help: "Publishes of status and event records tried again after a failure that passes (no stream leader, a reconnection).",
		}),
		stormLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "storm_limited_total", Help: "Device reports refused by storm control, by kind.",
		}, []string{"kind"}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "fanout_seconds", Help: "Time from a push's arrival at this node to its frame queued for every local recipient.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10µs .. ~2.6s
		}),
		pushesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "pushes_out_total", Help: "Push messages queued to sessions, by service (the hub's own /push/ services, else backend).",
		}, []string{"service"}),
		statusCoalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "status_coalesced_total", Help: "Status pushes superseded by a later status of the same device within the window.",
		}),
		admissionRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "admission_refused_total", Help: "Expensive requests (history reads, device listings) refused with 429 by admission, by reason.",
		}, []string{"reason"}),
		storesRecreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "stores_recreated_total", Help: "Buckets and streams this node found missing and created again, by store.",
		}, []string{"store"}),
		storeHealFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "store_heal_failures_total", Help: "Failed attempts to create a missing bucket or stream again, by store.",
		}, []string{"store"}),
		storeFeedRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "store_feed_restarts_total", Help: "Watchers and consumers started anew because their store was created again (here or by another node), by store.",
		}, []string{"store"}),
		storesMissing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "stores_missing", Help: "Buckets and streams found missing at the last check and not created again.",
		}),
		presenceRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "presence_retries_total", Help: "Presence writes tried again after a failure or an unknown outcome, by operation.",
		}, []string{"op"}),
		presenceAbandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "presence_abandoned_total", Help: "Presence work given up because the node stopped before it succeeded, by operation.",
		}, []string{"op"}),
	}
	m.exportZeros()
	for _, r := range []string{recordQueueFull, recordBusDown, recordStopping, recordUnavailable, recordInvalid} {
		m.recordsRefused.WithLabelValues(r)
	}
	m.pushesOutBy = make(map[string]prometheus.Counter)
	for _, l := range []string{"/push/presence", "/push/status", "/push/event", "/push/summary", "backend"} {
		m.pushesOutBy[l] = m.pushesOut.WithLabelValues(l)
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.sessions, m.interests, m.requests, m.pushesDelivered,
			m.pushesDropped, m.slowConsumers, m.abuseCloses, m.responsesDropped, m.authFailures, m.presence, m.presenceWrites,
			m.storeFailures, m.stormLimited, m.statusCoalesced, m.fanout, m.pushesOut)
		reg.MustRegister(m.admissionRefused, m.recordsRefused, m.recordsPending, m.recordRetries)
		reg.MustRegister(m.storesRecreated, m.storeHealFailures, m.storeFeedRestarts, m.storesMissing,
			m.presenceRetries, m.presenceAbandoned)
	}
	return m
}

// pushedOut counts n pushes of service. The label stays bounded: the hub's
// own push services by name, everything a backend or admin pushes as
// "backend"; the counters are looked up once, not per push.
func (m *metrics) pushedOut(service string, n int) {
	c, ok := m.pushesOutBy[service]
	if !ok {
		c = m.pushesOutBy["backend"]
	}
	c.Add(float64(n))
}
