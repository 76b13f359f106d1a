package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream KV buckets the hub keeps.
const (
	BucketUsers   = "hub_users"
	BucketDevices = "hub_devices"
	BucketNonces  = "hub_nonces"
)

// Device is a device registry entry (bucket hub_devices, key <sn>).
type Device struct {
	Type  string `json:"type"`
	Group string `json:"group"`
}

// Validate checks a registry entry after it is loaded. The type and group
// become subject tokens of the device's interests, so an entry that could
// not stand in a subject would lock its device out; the node ignores it
// instead, like an entry that is not JSON.
func (d Device) Validate() error {
	var errs []error
	for _, f := range [...]struct{ name, v string }{{"type", d.Type}, {"group", d.Group}} {
		if !subjects.ValidToken(f.v) || len(f.v) > 64 {
			errs = append(errs, fmt.Errorf("hub: device %s %q: want 1 to 64 characters without '.', '*', '>' or spaces", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// nonceStore claims device nonces in a KV bucket whose entries expire after
// the replay window. Create succeeds for exactly one caller across every
// node, which is what makes a replay on another node fail.
type nonceStore struct {
	kv jetstream.KeyValue
}

func newNonceStore(ctx context.Context, js jetstream.JetStream, window time.Duration, replicas int) (*nonceStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketNonces,
		Description: "device auth nonces seen within the clock-skew window",
		TTL:         window,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", BucketNonces, err)
	}
	return &nonceStore{kv: kv}, nil
}

// Claim implements auth.NonceStore. The key is a hash of the nonce, since a
// nonce may hold characters a KV key cannot.
func (n *nonceStore) Claim(ctx context.Context, nonce string) error {
	sum := sha256.Sum256([]byte(nonce))
	_, err := n.kv.Create(ctx, hex.EncodeToString(sum[:16]), nil)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return auth.ErrReplay
	}
	return err
}

// watchCache mirrors a KV bucket into memory through a watcher, so lookups
// cost no round trip and changes reach this node within milliseconds.
type watchCache[T any] struct {
	kv       jetstream.KeyValue
	onChange func(key string, old, cur *T) // called without the lock held

	mu      sync.RWMutex
	entries map[string]T // Guarded by mu.
}

func openCache[T any](ctx, runCtx context.Context, srv *Server, cfg jetstream.KeyValueConfig, onChange func(string, *T, *T)) (*watchCache[T], error) {
	kv, err := srv.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", cfg.Bucket, err)
	}
	c := &watchCache[T]{kv: kv, onChange: onChange, entries: make(map[string]T)}
	loaded := make(chan struct{})
	if err := srv.watchKV(runCtx, kv, func(e jetstream.KeyValueEntry, live bool) { c.apply(srv, e, live) }, loaded); err != nil {
		return nil, err
	}
	select {
	case <-loaded:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("hub: load %s: %w", cfg.Bucket, ctx.Err())
	}
}

// watchKV follows every key of a bucket until runCtx ends: apply gets each
// entry, with live false for those present at start, and ready is closed
// once those have been applied.
func (srv *Server) watchKV(runCtx context.Context, kv jetstream.KeyValue, apply func(e jetstream.KeyValueEntry, live bool), ready chan struct{}) error {
	w, err := kv.WatchAll(runCtx)
	if err != nil {
		return fmt.Errorf("hub: watch %s: %w", kv.Bucket(), err)
	}
	srv.goTask(func() {
		defer func() {
			// Stop asks the server to drop the watch; cut off from NATS it
			// would only wait for a timeout, and the subscription dies with
			// the connection anyway.
			if srv.nc.IsConnected() {
				_ = w.Stop()
			}
		}()
		initial := true
		for {
			select {
			case <-runCtx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of the initial values
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				apply(e, !initial)
			}
		}
	})
	return nil
}

func (c *watchCache[T]) apply(srv *Server, e jetstream.KeyValueEntry, notify bool) {
	key := e.Key()
	var cur *T
	if e.Operation() == jetstream.KeyValuePut {
		var v T
		err := json.Unmarshal(e.Value(), &v)
		if c, ok := any(&v).(interface{ Validate() error }); ok && err == nil {
			err = c.Validate()
		}
		if err != nil {
			srv.log.Error("bad entry in bucket, ignored", "bucket", e.Bucket(), "key", key, "err", err)
			return
		}
		cur = &v
	}
	c.mu.Lock()
	var old *T
	if v, ok := c.entries[key]; ok {
		old = &v
	}
	if cur != nil {
		c.entries[key] = *cur
	} else {
		delete(c.entries, key)
	}
	c.mu.Unlock()
	if notify && c.onChange != nil {
		c.onChange(key, old, cur)
	}
}

func (c *watchCache[T]) get(key string) (T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.entries[key]
	return v, ok
}

func (c *watchCache[T]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// userStore is the admin and viewer accounts, bucket hub_users.
type userStore struct {
	*watchCache[auth.User]
	srv *Server
}

func openUserStore(ctx, runCtx context.Context, srv *Server) (*userStore, error) {
	us := &userStore{srv: srv}
	c, err := openCache(ctx, runCtx, srv, jetstream.KeyValueConfig{
		Bucket: BucketUsers, Description: "admin and viewer accounts", History: 1,
		Storage: jetstream.FileStorage, Replicas: srv.cfg.Replicas,
	}, us.changed)
	if err != nil {
		return nil, err
	}
	us.watchCache = c
	return us, nil
}

// changed ends the sessions of a user who was removed or whose password,
// role or groups changed: their tokens no longer hold.
func (us *userStore) changed(name string, old, cur *auth.User) {
	if old == nil || (cur != nil && cur.UpdatedAt == old.UpdatedAt) {
		return
	}
	us.srv.kickUser(name, "account changed")
}

// bootstrap creates the admin user when the store is empty. Create is
// create-only, so of several nodes starting at once exactly one succeeds.
func (us *userStore) bootstrap(ctx context.Context, password string) error {
	if us.len() > 0 {
		return nil
	}
	generated := password == ""
	if generated {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		password = hex.EncodeToString(b[:])
	}
	hash, err := auth.HashPassword(password, us.srv.cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("hub: admin password: %w", err)
	}
	u := auth.User{Name: "admin", Role: auth.RoleAdmin, Groups: []string{"*"}, PasswordHash: hash, UpdatedAt: us.srv.cfg.Now().UnixMilli()}
	b, _ := json.Marshal(u)
	if _, err := us.kv.Create(ctx, u.Name, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return fmt.Errorf("hub: create admin user: %w", err)
	}
	us.apply(us.srv, staticEntry{key: u.Name, value: b}, false)
	if generated {
		// Logged once, at creation: the operator's only way to learn it.
		us.srv.log.Warn("created user admin with a generated password; change it with hubctl user passwd", "password", password)
	} else {
		us.srv.log.Info("created user admin")
	}
	return nil
}

// deviceRegistry is the device registry, bucket hub_devices.
type deviceRegistry struct {
	*watchCache[Device]
}

func openDeviceRegistry(ctx, runCtx context.Context, srv *Server) (*deviceRegistry, error) {
	c, err := openCache(ctx, runCtx, srv, jetstream.KeyValueConfig{
		Bucket: BucketDevices, Description: "device registry: type and group per serial number", History: 1,
		Storage: jetstream.FileStorage, Replicas: srv.cfg.Replicas,
	}, func(sn string, old, cur *Device) { srv.registryChanged(sn, cur) })
	if err != nil {
		return nil, err
	}
	return &deviceRegistry{c}, nil
}

// staticEntry is a KeyValueEntry built locally, to apply a write this node
// made before its watcher reports it.
type staticEntry struct {
	jetstream.KeyValueEntry
	key   string
	value []byte
}

func (e staticEntry) Key() string                     { return e.key }
func (e staticEntry) Value() []byte                   { return e.value }
func (e staticEntry) Bucket() string                  { return BucketUsers }
func (e staticEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// openSoftBucket creates or updates a bucket of soft state, entries their
// writers rewrite all the time (hub_presence). A single-replica bucket is
// created with asynchronous persistence: the server writes its entries to
// disk in batches instead of one write(2) each, and a server that crashes
// may lose the last milliseconds of writes, which the nodes rewrite anyway.
// Replicated streams flush asynchronously already, and do not take the
// setting. A stream's persistence is fixed at creation: an existing bucket
// keeps its own, whichever it is.
func openSoftBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Replicas > 1 {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	scfg := kvStreamConfig(cfg)
	scfg.PersistMode = jetstream.AsyncPersistMode
	info, err := js.Stream(ctx, scfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, scfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another node created it first, with this same config.
			_, err = js.UpdateStream(ctx, scfg)
		}
	case err != nil:
	case info.CachedInfo().Config.PersistMode == jetstream.AsyncPersistMode:
		_, err = js.UpdateStream(ctx, scfg)
	default:
		_, err = js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	return js.KeyValue(ctx, cfg.Bucket)
}

// kvStreamConfig is the stream behind a KV bucket, as nats.go's
// CreateOrUpdateKeyValue makes it (ADR-8), for the settings the hub uses.
func kvStreamConfig(cfg jetstream.KeyValueConfig) jetstream.StreamConfig {
	history := int64(max(cfg.History, 1))
	dupes := 2 * time.Minute
	if cfg.TTL > 0 && cfg.TTL < dupes {
		dupes = cfg.TTL
	}
	return jetstream.StreamConfig{
		Name:                   "KV_" + cfg.Bucket,
		Description:            cfg.Description,
		Subjects:               []string{subjects.KVKeys(cfg.Bucket) + ">"},
		MaxMsgsPerSubject:      history,
		MaxBytes:               -1,
		MaxAge:                 cfg.TTL,
		MaxMsgSize:             -1,
		Storage:                cfg.Storage,
		Replicas:               max(cfg.Replicas, 1),
		AllowRollup:            true,
		DenyDelete:             true,
		Duplicates:             dupes,
		MaxMsgs:                -1,
		MaxConsumers:           -1,
		AllowDirect:            true,
		Discard:                jetstream.DiscardNew,
		AllowMsgTTL:            cfg.LimitMarkerTTL != 0,
		SubjectDeleteMarkerTTL: cfg.LimitMarkerTTL,
	}
}
