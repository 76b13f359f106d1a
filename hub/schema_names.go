package hub

import "github.com/fleethub/fleethub/hub/schema"

// Short names for the schema types and constants that the presence,
// record, listing, summary and subscription files use, so that moving the
// NATS-side contract into hub/schema left those files as they were.
// Other code names schema.X directly; new code should too.

// Bucket and stream names.
const (
	BucketPresence = schema.BucketPresence
	BucketNodes    = schema.BucketNodes
	StreamStatus   = schema.StreamStatus
	StreamEvents   = schema.StreamEvents
	StreamPresence = schema.StreamPresence
)

// KV entries, records and views.
type (
	PresenceEntry  = schema.PresenceEntry
	NodeEntry      = schema.NodeEntry
	StatusRecord   = schema.StatusRecord
	EventRecord    = schema.EventRecord
	PresenceRecord = schema.PresenceRecord
	DeviceView     = schema.DeviceView
	Counts         = schema.Counts
	Summary        = schema.Summary
)

// Reason says why a session ended, or why a device's presence changed.
type Reason = schema.Reason

// Reasons in presence records.
const (
	ReasonClosed    = schema.ReasonClosed
	ReasonReplaced  = schema.ReasonReplaced
	ReasonConnected = schema.ReasonConnected
	ReasonNodeLost  = schema.ReasonNodeLost
)
