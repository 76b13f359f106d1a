package schema

// KV buckets the hub keeps.
const (
	// BucketPresence holds an entry per online device (PresenceEntry), key <sn>.
	BucketPresence = "hub_presence"
	// BucketNodes holds a short-TTL liveness entry per node (NodeEntry), key <node>.
	BucketNodes = "hub_nodes"
	// BucketNodeDevices indexes the devices each node holds, key
	// <node>.<sn>, value the session; read only when a node is lost.
	BucketNodeDevices = "hub_node_devices"
	// BucketUsers holds admin and viewer accounts, key <user>.
	BucketUsers = "hub_users"
	// BucketDevices is the device registry (Device), key <sn>.
	BucketDevices = "hub_devices"
	// BucketNonces holds claimed device nonces until the replay window ends.
	BucketNonces = "hub_nonces"
	// BucketRoles holds the hub's leases: key "directory", the node that
	// is the device directory.
	BucketRoles = "hub_roles"
	// BucketNoncesSeen, with a data centre's suffix (see
	// Layout.NoncesSeen), holds the nonces claimed in every other data
	// centre: a claim found there is a replay.
	BucketNoncesSeen = "hub_nonces_seen"
)

// Streams of records.
const (
	// StreamStatus keeps StatusRecords on hub.dev.<sn>.status.
	StreamStatus = "HUB_STATUS"
	// StreamEvents keeps EventRecords on hub.dev.<sn>.event.
	StreamEvents = "HUB_EVENTS"
	// StreamPresence keeps PresenceRecords on hub.presence.<sn>.
	StreamPresence = "HUB_PRESENCE"
)

// Headers the hub sets on requests it sends over NATS.
const (
	HeaderSession   = "Hub-Session"
	HeaderRole      = "Hub-Role"
	HeaderNode      = "Hub-Node"
	HeaderSN        = "Hub-Sn"
	HeaderUser      = "Hub-User"
	HeaderGroup     = "Hub-Group"
	HeaderTimeoutMS = "Hub-Timeout-Ms" // on hub.dev.<sn>.cmd: when the holder answers 408
	// HeaderPushID, on a message of a watch subject, is the push id every
	// node gives the record's copies ("e<seq>" for an event, "p<seq>" for
	// a presence record, by their stream sequence). Without it a node
	// gives each push a fresh id.
	HeaderPushID = "Hub-Push-Id"
	// HeaderKick on hub.dev.<sn>.cmd makes the request a kick (/admin/kick)
	// instead of a command: signed like a control message, body
	// {"groups":[...]} (the admin's; absent for all).
	HeaderKick = "Hub-Kick"
)

// Inbox prefixes. Replies (JetStream API answers, direct gets, request
// replies) come back on the requester's inbox subjects, so on a bus with
// permissions each role gets its own prefix: a backend allowed to
// subscribe to _INBOX.> (nats.go's default) cannot read what hub nodes or
// operators are answered, such as hub_users entries.
const (
	// NodeInboxPrefix is the inbox prefix of hub nodes' connections.
	NodeInboxPrefix = "_INBOX_hub"
	// OperatorInboxPrefix is the inbox prefix of hubctl's connections.
	OperatorInboxPrefix = "_INBOX_ops"
)

// Headers of the hub's node-to-node control messages (hub.ctl.takeover,
// the directory's requests and replies): an HMAC-SHA256 under a key
// derived from the master secret (auth.ControlKey) and the signing time.
// A node drops a control message without them, or with a signature that
// does not verify or a time too far from its own clock.
const (
	// HeaderSig is the hex signature (auth.SignControl).
	HeaderSig = "Hub-Sig"
	// HeaderSigAt is the signing time, Unix milliseconds.
	HeaderSigAt = "Hub-Sig-At"
)

// ServiceReplyPrefix starts the reply subject of every hub.svc.<path>
// request a node sends: <prefix>.<connection>.<id>. Backends answer on it
// with a plain publish, so their permissions allow publishing there (and
// need no allow_responses, which would also let them answer the
// acknowledgement inboxes of the records they follow).
const ServiceReplyPrefix = "_HUB_SVC"
