package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is what a Tracker depends on, given explicitly.
type Config struct {
	// JS and Conn are the node's JetStream context and its connection.
	JS   jetstream.JetStream
	Conn *nats.Conn
	// JSDomain is the JetStream domain JS was made for ("" for the
	// default one): the tracker's own JetStream context uses it too.
	JSDomain string
	// NodeID names this node in entries, records and the node index;
	// NodeAddr is written in its liveness entry.
	NodeID, NodeAddr string
	// PresenceTTL is the lifetime of an entry nobody refreshes, NodeTTL
	// that of a node's liveness entry, OfflineGrace how long a device that
	// left may take to come back before it is reported offline, History
	// how long HUB_PRESENCE keeps records.
	PresenceTTL, NodeTTL, OfflineGrace, History time.Duration
	// Replicas of the buckets and the stream.
	Replicas int
	// Layout names the buckets and the stream the tracker writes (its
	// data centre's own) and the subjects of its records; the zero Layout
	// is classic mode (hub_presence, HUB_PRESENCE, hub.presence.<sn>).
	// The tracker judges node liveness from its own data centre's nodes
	// only, and reads the fleet (Known) from the aggregates.
	Layout schema.Layout
	// RunCtx is the lifetime of the tracker's work (the hub's run
	// context); Stop ends it too.
	RunCtx context.Context
	// Clock drives grace, refresh scheduling and node liveness. Nil means
	// the wall clock.
	Clock Clock
	// Log gets the tracker's warnings. Nil means a discard handler.
	Log *slog.Logger
	// Go runs f on a goroutine its owner waits for, and reports false,
	// not running f, once the owner has begun to stop.
	Go func(f func()) bool
	// Sessions is how many sessions the node serves, for its liveness
	// entry. Nil means none.
	Sessions func() int
	// Stored, the record sink, is called once for each record this
	// tracker stored in HUB_PRESENCE, with its stream sequence.
	Stored func(r schema.PresenceRecord, seq uint64, data []byte)
	// Lost, when set, is told of a device session held here whose entry
	// another session took: it is no longer this node's. (The hub closes
	// such sessions on the takeover announcement.)
	Lost func(sn, session string)
	// Metrics counts the tracker's work. Nil counts nothing.
	Metrics Metrics
	// Stores is told of failures that may mean a bucket or the stream is
	// gone, and heals them. Nil heals nothing.
	Stores Stores
	// Register, when set, takes each store Open opened: it watches its
	// health and runs its feed (Store.Follow), and returns once the feed
	// has loaded. Nil: Open runs the feeds itself, until Stop.
	Register func(ctx context.Context, st Store) error
}

// Device is a device session, as presence knows it.
type Device struct {
	SN, Type, Group string
	Session         string // the session's id
	Addr            string // the device's remote address
}

// Clock is the time a Tracker goes by. AfterFunc runs f on its own
// goroutine once d has passed, unless the Timer is stopped first.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a Clock's pending call.
type Timer interface {
	// Stop prevents the call, and reports whether it did.
	Stop() bool
}

// Metrics counts presence work. Implementations must be safe for
// concurrent use.
type Metrics interface {
	// Refreshed counts entries refreshed.
	Refreshed(n int)
	// Retried counts writes of op tried again after a failure or an
	// unknown outcome.
	Retried(op string, n int)
	// Abandoned counts work of op given up because the tracker stopped.
	Abandoned(op string, n int)
}

// Stores is the health of the stores the tracker uses.
type Stores interface {
	// Lost is told of a failed operation on store name (nil err is
	// nothing); a failure that says the store is gone has it checked.
	Lost(name string, err error)
	// Heal creates store name again now if it is gone.
	Heal(ctx context.Context, name string) error
}

// Store is a bucket or stream the tracker needs.
type Store struct {
	Name   string // as operators know it: hub_presence, HUB_PRESENCE
	Stream string // its JetStream stream
	// Create creates or updates it.
	Create func(ctx context.Context) error
	// Recreated, when set, is to run when the store was created again,
	// before its feed starts anew.
	Recreated func()
	// Follow, when set, starts the store's feed, to run until ctx ends,
	// and returns a channel closed once it has delivered what the store
	// held; fresh says the store was created again since it last started.
	Follow func(ctx context.Context, fresh bool) (<-chan struct{}, error)
}

// wallClock is the Clock of time itself.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }
func (wallClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

type nopMetrics struct{}

func (nopMetrics) Refreshed(int)         {}
func (nopMetrics) Retried(string, int)   {}
func (nopMetrics) Abandoned(string, int) {}

type nopStores struct{}

func (nopStores) Lost(string, error)                 {}
func (nopStores) Heal(context.Context, string) error { return errNoStores }

// validate returns every problem of cfg, joined.
func (c *Config) validate() error {
	var errs []error
	if c.JS == nil || c.Conn == nil {
		errs = append(errs, errors.New("presence: config: JetStream and connection are required"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("presence: config: node id is required"))
	}
	if c.PresenceTTL <= 0 || c.NodeTTL <= 0 {
		errs = append(errs, errors.New("presence: config: presence and node TTLs must be positive"))
	}
	if c.OfflineGrace < 0 {
		errs = append(errs, errors.New("presence: config: negative offline grace"))
	}
	if c.RunCtx == nil {
		errs = append(errs, errors.New("presence: config: run context is required"))
	}
	if c.Go == nil {
		errs = append(errs, errors.New("presence: config: task spawner is required"))
	}
	if err := c.Layout.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("presence: config: %w", err))
	}
	return errors.Join(errs...)
}

// defaults fills in the optional dependencies.
func (c *Config) defaults() {
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Sessions == nil {
		c.Sessions = func() int { return 0 }
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	if c.Stores == nil {
		c.Stores = nopStores{}
	}
}
