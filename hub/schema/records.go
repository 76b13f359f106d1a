package schema

import "encoding/json"

// StatusRecord is a device's status as the hub stores and pushes it.
type StatusRecord struct {
	SN     string          `json:"sn"`
	Type   string          `json:"type"`
	Group  string          `json:"group"`
	At     int64           `json:"at"`
	Status json.RawMessage `json:"status"`
}

// EventRecord is a device's event as the hub stores and pushes it.
type EventRecord struct {
	SN       string          `json:"sn"`
	Type     string          `json:"type"`
	Group    string          `json:"group"`
	At       int64           `json:"at"`
	Event    string          `json:"event"`
	Priority string          `json:"priority"`
	Data     json.RawMessage `json:"data"`
}

// PresenceRecord is published on hub.presence.<sn> once per change, and
// pushed to subscribed admins as /push/presence.
type PresenceRecord struct {
	SN     string `json:"sn"`
	Type   string `json:"type"`
	Group  string `json:"group"`
	Online bool   `json:"online"`
	Reason Reason `json:"reason"`
	Node   string `json:"node"`
	At     int64  `json:"at"`
}

// Reason says why a session ended, or, in a presence record, why the
// device's presence changed.
type Reason string

// Reasons a session ends.
const (
	ReasonClosed   Reason = "closed"   // the client closed, or the connection broke
	ReasonTimeout  Reason = "timeout"  // the client missed the pong wait
	ReasonReplaced Reason = "replaced" // a newer session for the same device
	ReasonKicked   Reason = "kicked"   // ended by an admin or by the hub
)

// Reasons in presence records, besides the session end reasons.
const (
	ReasonConnected Reason = "connected"
	ReasonNodeLost  Reason = "node_lost"
)

// Known reports whether r is a reason a hub writes in a presence record.
func (r Reason) Known() bool {
	switch r {
	case ReasonConnected, ReasonNodeLost, ReasonClosed, ReasonTimeout, ReasonReplaced, ReasonKicked:
		return true
	}
	return false
}
