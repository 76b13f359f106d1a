package hub

import (
	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
)

// exportZeros creates every labelled series whose label values are known
// in advance, so that /metrics shows them at 0 from the start: an alert on
// a rate sees 0, not "no data", until the first one. (The stores' series
// are created when a store is registered: their names depend on the
// node's data centre.)
func (m *metrics) exportZeros() {
	for svc := range knownServices {
		m.requests.WithLabelValues(svc, "0")
	}
	for _, r := range []string{dropMalformed, dropInvalid, dropReserved, dropBacklog, dropOverflow,
		dropSlowConsumer, dropClosed, dropInvalidRecord} {
		m.pushesDropped.WithLabelValues(r)
	}
	for _, r := range []string{"bad_nonce", "bad_serial", "bad_signature", "clock_skew", "replay", "store_unavailable",
		"unregistered", "token_expired", "bad_token", "timeout", "throttled", "bad_password", "busy"} {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range []Reason{ReasonConnected, ReasonClosed, schema.ReasonTimeout, ReasonReplaced, ReasonNodeLost, schema.ReasonKicked} {
		m.presence.WithLabelValues(string(r))
	}
	m.stormLimited.WithLabelValues("status")
	for p := range priorities {
		m.stormLimited.WithLabelValues("event_" + p)
	}
	for _, op := range []string{"connected", "expire", "node_lost", "node_lost_unsure", "reassert", "reconcile",
		"reindex", "repair", "rewrite", "unindex"} {
		m.presenceRetries.WithLabelValues(op)
		m.presenceAbandoned.WithLabelValues(op)
	}
	for _, r := range []auth.Role{auth.RoleDevice, auth.RoleAdmin, auth.RoleViewer} {
		m.sessions.WithLabelValues(string(r))
	}
}
