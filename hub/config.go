package hub

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Zero values get the defaults documented on
// each field.
type Config struct {
	// Conn is the node's connection to NATS (in-process for the embedded
	// server). Required. The Server does not close it.
	Conn *nats.Conn
	// NodeID names this node in answers, headers and presence. Default: the
	// connection's name, or "node".
	NodeID string
	// MasterSecret is the secret device keys and token keys derive from.
	// Required, at least 16 bytes.
	MasterSecret []byte
	// AdminPassword is the password of the "admin" user created when the
	// user store is empty. Empty: one is generated and logged once.
	AdminPassword string
	// RequireRegistered refuses devices missing from the registry.
	RequireRegistered bool

	// PingInterval is what clients are told in ping_interval_ms. Default 10s.
	PingInterval time.Duration
	// AuthTimeout is how long a session may stay unauthenticated. Default 5s.
	AuthTimeout time.Duration
	// MaxSkew is the allowed device clock skew. Default 60s.
	MaxSkew time.Duration
	// TokenTTL is the lifetime of admin tokens. Default 24h.
	TokenTTL time.Duration
	// ServiceTimeout bounds a backend request on hub.svc.*. Default 5s.
	ServiceTimeout time.Duration
	// CommandTimeout is the default timeout of a device command. Default 5s.
	CommandTimeout time.Duration
	// PresenceTTL is how long a device's presence entry lives without a
	// refresh; the node refreshes it shortly before (108 s at the default).
	// Default 2m.
	PresenceTTL time.Duration
	// NodeTTL is how long this node's liveness entry lives without a
	// refresh; it bounds how fast a lost node's devices go offline.
	// Default 5s.
	NodeTTL time.Duration
	// OfflineGrace is how long a disconnected device may take to come back
	// before it is reported offline. Default 5s.
	OfflineGrace time.Duration
	// PresenceHistory is how long HUB_PRESENCE keeps records. Default 7 days.
	PresenceHistory time.Duration
	// NodeAddr is this node's public address, for hub_nodes and presence.
	NodeAddr string
	// StatusHistory and EventHistory are how many records HUB_STATUS and
	// HUB_EVENTS keep per device; RecordAge how long. Defaults 100, 1000
	// and 7 days.
	StatusHistory, EventHistory int
	RecordAge                   time.Duration
	// MaxRecordBytes bounds a status or event body (413 above). Default
	// 16 KiB.
	MaxRecordBytes int
	// Storm control per device: status reports, normal events, and high or
	// emergency events (a separate, larger bucket, so that normal events
	// never crowd them out). Defaults 10/s burst 20, 5/s burst 20, 50/s
	// burst 100.
	StatusRate, EventRate, UrgentRate    float64
	StatusBurst, EventBurst, UrgentBurst int
	// CoalesceWindow is the shortest time between two status pushes about
	// one device; reports in between coalesce, the latest winning.
	// Default 250ms.
	CoalesceWindow time.Duration
	// SummaryInterval is the period of /push/summary. Default 5s.
	SummaryInterval time.Duration
	// SessionLogInterval is the period of the info line that sums up the
	// sessions started and ended (each is logged at debug). Default 10s.
	SessionLogInterval time.Duration
	// BcryptCost is the cost of new password hashes. Default bcrypt's 10.
	BcryptCost int
	// Replicas is the replica count of the hub's JetStream buckets. Default 1.
	Replicas int
	// DC is this node's data centre, a subject token. Empty: the name of
	// the NATS cluster the connection reaches, else the JetStream domain,
	// else none (classic mode: one JetStream for the whole hub, the names
	// of PROTOCOL §6 as they are). Resolved at Start (Server.Layout).
	DC string
	// JSDomain is the JetStream domain of the node's buckets and streams
	// (a leaf-node site): every JetStream context the node makes uses it.
	// Empty: the connection's own JetStream.
	JSDomain string
	// StoreCheckInterval is how often the node looks up every bucket and
	// stream it needs (one stream-info call each), to create again those
	// found missing and to report readiness. Default 3s.
	StoreCheckInterval time.Duration
	// JetStreamCheck, when set, is asked by every Health: an error makes
	// the node not ready ("jetstream"). It must answer at once, from local
	// state, with no request to NATS: cmd/hub passes the embedded server's
	// JetStreamReady, which sees a cluster without quorum before a stream
	// lookup would time out.
	JetStreamCheck func() error

	// MessageRate and MessageBurst bound the requests a session may send
	// (429 above). Defaults 100/s and 200.
	MessageRate  float64
	MessageBurst int
	// RateLimitClose is how long a session may stay over its rate limit
	// (refused requests with no break of a second) before it is closed
	// with 1008. Default 10s.
	RateLimitClose time.Duration
	// MaxAnswerBytes bounds the answers to one frame together, and so any
	// one answer (413 above). Keep it at most the transport's queue bound.
	// Default 1 MiB.
	MaxAnswerBytes int
	// AbuseBurst is how many failed requests (4xx) a session may make in a
	// burst before it is closed with 1008; they refill at one per second.
	// Default 50.
	AbuseBurst int
	// MaxInflight bounds a session's concurrent slow requests (commands and
	// backend services). Default 32.
	MaxInflight int
	// MaxPendingRecords bounds a session's status and event records
	// waiting to be stored; one more is refused with 429. Default 32.
	MaxPendingRecords int
	// DispatchShards is the number of goroutines that deliver pushes; one
	// subject always maps to the same shard, which keeps its order.
	// Default 8.
	DispatchShards int
	// DispatchQueue is the length of the channel each shard takes from
	// nats.go (a pointer a message: 512 KiB a shard at the default).
	// Default 65536.
	DispatchQueue int
	// DispatchBacklog bounds the messages one subject may have waiting for
	// dispatch, and DispatchBytes their payload bytes per shard; what does
	// not fit is dropped and counted (reason "backlog"). Defaults 4096 and
	// 16 MiB.
	DispatchBacklog, DispatchBytes int

	// The answers that grow with the data are built within MaxAnswerBytes:
	// /admin/history keeps the newest records that fit (with "truncated"),
	// a device listing page stops early with "next". The limits below
	// bound how many are built.
	//
	// HistoryReadsPerSession bounds the /admin/history reads one session
	// has running at once. Default 2.
	HistoryReadsPerSession int
	// HistoryReadsPerNode bounds the /admin/history reads running at once
	// on the node, which bounds what history streams into its NATS
	// connection. Default 8.
	HistoryReadsPerNode int
	// HistoryQueue is how many history reads may wait for a slot,
	// node-wide; one more is refused with 429. Default 64.
	HistoryQueue int
	// HistoryWait is how long a history read waits for a slot before it is
	// refused with 429. Default 2s.
	HistoryWait time.Duration
	// ListBytesRate and ListBytesBurst are a token bucket of the bytes of
	// device listings (/admin/devices pages and /admin/subscribe snapshots)
	// one session is given: a page is cut short (with "next") when the
	// bucket runs low, and a listing is refused with 429 when not one
	// device fits. Defaults 4 MiB/s and 4 MiB.
	ListBytesRate  float64
	ListBytesBurst int

	// Logger receives the hub's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the hub's metrics. Nil registers nowhere.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("hub: Conn is required"))
	}
	if len(c.MasterSecret) < 16 {
		errs = append(errs, errors.New("hub: MasterSecret must be at least 16 bytes"))
	}
	for name, d := range map[string]time.Duration{
		"PingInterval": c.PingInterval, "AuthTimeout": c.AuthTimeout, "MaxSkew": c.MaxSkew,
		"TokenTTL": c.TokenTTL, "ServiceTimeout": c.ServiceTimeout, "CommandTimeout": c.CommandTimeout,
		"PresenceTTL": c.PresenceTTL, "NodeTTL": c.NodeTTL, "OfflineGrace": c.OfflineGrace, "PresenceHistory": c.PresenceHistory,
		"HistoryWait":        c.HistoryWait,
		"StoreCheckInterval": c.StoreCheckInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("hub: %s must not be negative", name))
		}
	}
	if c.PresenceTTL != 0 && c.PresenceTTL < 2*time.Second {
		errs = append(errs, errors.New("hub: PresenceTTL must be at least 2s"))
	}
	if c.NodeTTL != 0 && c.NodeTTL < 300*time.Millisecond {
		errs = append(errs, errors.New("hub: NodeTTL must be at least 300ms"))
	}
	for name, v := range map[string]int{
		"HistoryReadsPerSession": c.HistoryReadsPerSession, "HistoryReadsPerNode": c.HistoryReadsPerNode,
		"HistoryQueue": c.HistoryQueue, "ListBytesBurst": c.ListBytesBurst,
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("hub: %s must not be negative", name))
		}
	}
	if c.ListBytesRate < 0 {
		errs = append(errs, errors.New("hub: ListBytesRate must not be negative"))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, errors.New("hub: Replicas must be 1 to 5"))
	}
	if c.DC != "" && !subjects.ValidToken(c.DC) {
		errs = append(errs, fmt.Errorf("hub: DC %q must be a subject token (no '.', '*', '>' or white space)", c.DC))
	}
	if c.JSDomain != "" && !subjects.ValidToken(c.JSDomain) {
		errs = append(errs, fmt.Errorf("hub: JSDomain %q must be a subject token (no '.', '*', '>' or white space)", c.JSDomain))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PingInterval, 10*time.Second)
	def(&c.AuthTimeout, 5*time.Second)
	def(&c.MaxSkew, 60*time.Second)
	def(&c.TokenTTL, 24*time.Hour)
	def(&c.ServiceTimeout, 5*time.Second)
	def(&c.CommandTimeout, 5*time.Second)
	def(&c.PresenceTTL, 2*time.Minute)
	def(&c.NodeTTL, 5*time.Second)
	def(&c.OfflineGrace, 5*time.Second)
	def(&c.PresenceHistory, 7*24*time.Hour)
	def(&c.RecordAge, 7*24*time.Hour)
	def(&c.CoalesceWindow, 250*time.Millisecond)
	def(&c.SummaryInterval, 5*time.Second)
	def(&c.SessionLogInterval, 10*time.Second)
	def(&c.StoreCheckInterval, 3*time.Second)
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.StatusHistory, 100)
	defInt(&c.EventHistory, 1000)
	defInt(&c.MaxRecordBytes, 16<<10)
	defInt(&c.StatusBurst, 20)
	defInt(&c.EventBurst, 20)
	defInt(&c.UrgentBurst, 100)
	defRate := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	defRate(&c.StatusRate, 10)
	defRate(&c.EventRate, 5)
	defRate(&c.UrgentRate, 50)
	if c.NodeID == "" {
		c.NodeID = c.Conn.Opts.Name
		if c.NodeID == "" {
			c.NodeID = "node"
		}
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MessageRate == 0 {
		c.MessageRate = 100
	}
	if c.MessageBurst == 0 {
		c.MessageBurst = 200
	}
	if c.RateLimitClose == 0 {
		c.RateLimitClose = 10 * time.Second
	}
	if c.MaxAnswerBytes == 0 {
		c.MaxAnswerBytes = 1 << 20
	}
	if c.AbuseBurst == 0 {
		c.AbuseBurst = 50
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 32
	}
	if c.MaxPendingRecords == 0 {
		c.MaxPendingRecords = 32
	}
	if c.DispatchShards == 0 {
		c.DispatchShards = 8
	}
	if c.DispatchQueue == 0 {
		c.DispatchQueue = 1 << 16
	}
	if c.DispatchBacklog == 0 {
		c.DispatchBacklog = 4096
	}
	if c.DispatchBytes == 0 {
		c.DispatchBytes = 16 << 20
	}
	defInt(&c.HistoryReadsPerSession, 2)
	defInt(&c.HistoryReadsPerNode, 8)
	defInt(&c.HistoryQueue, 64)
	def(&c.HistoryWait, 2*time.Second)
	defRate(&c.ListBytesRate, 4<<20)
	defInt(&c.ListBytesBurst, 4<<20)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}
