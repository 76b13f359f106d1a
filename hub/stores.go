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
	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/internal/kvwatch"
	"github.com/nats-io/nats.go/jetstream"
)

// nonceStore claims device nonces in a KV bucket whose entries expire after
// the replay window. Create succeeds for exactly one caller across every
// node, which is what makes a replay on another node fail.
//
// In data-centre mode the bucket is the data centre's own
// (hub_nonces_<dc>), and a claim first looks the nonce up in
// hub_nonces_seen_<dc>, which sources the other data centres' claims: a
// nonce used in another data centre is a replay once its claim has
// reached this one (the WAN's latency), and no claim crosses the WAN.
type nonceStore struct {
	kv     jetstream.KeyValue
	seen   jetstream.KeyValue // the other data centres' claims; nil in classic mode
	name   string             // the own bucket
	stores *storeSet
}

func newNonceStore(ctx context.Context, srv *Server, window time.Duration) (*nonceStore, error) {
	l := srv.layout
	cfg := jetstream.KeyValueConfig{
		Bucket:      l.Nonces(),
		Description: "device auth nonces seen within the clock-skew window",
		TTL:         window,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    srv.cfg.Replicas,
		Placement:   pres.Placement(l),
	}
	kv, err := jscreate.KeyValue(ctx, srv.js, cfg)
	if err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", cfg.Bucket, err)
	}
	ns := &nonceStore{kv: kv, name: cfg.Bucket, stores: srv.stores}
	if err := srv.stores.add(ctx, srv.runCtx, kvStore(cfg.Bucket, func(ctx context.Context) error {
		_, err := jscreate.KeyValue(ctx, srv.js, cfg)
		return err
	})); err != nil {
		return nil, err
	}
	return ns, nil
}

// openSeen opens, in data-centre mode, the bucket of the nonces claimed
// in the other data centres, which openViews created. Start calls it
// before the node serves.
func (n *nonceStore) openSeen(ctx context.Context, srv *Server) error {
	l := srv.layout
	if !l.DCMode() {
		return nil
	}
	seen, err := jscreate.Retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return srv.js.KeyValue(ctx, l.NoncesSeen())
	})
	if err != nil {
		return fmt.Errorf("hub: bucket %s: %w", l.NoncesSeen(), err)
	}
	n.seen = seen
	return nil
}

// Claim implements auth.NonceStore. The key is a hash of the nonce, since a
// nonce may hold characters a KV key cannot. When the bucket is gone, it
// is created again and the claim tried once more. A nonce the other data
// centres claimed is a replay; when their claims cannot be read (the seen
// bucket missing), the claim fails rather than risk a replay.
func (n *nonceStore) Claim(ctx context.Context, nonce string) error {
	sum := sha256.Sum256([]byte(nonce))
	key := hex.EncodeToString(sum[:16])
	if n.seen != nil {
		_, err := n.seen.Get(ctx, key)
		switch {
		case err == nil:
			return auth.ErrReplay
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			n.stores.lost(n.seen.Bucket(), err)
			return fmt.Errorf("hub: nonces of other data centres: %w", err)
		}
	}
	_, err := n.kv.Create(ctx, key, nil)
	if storeGone(err) {
		if herr := n.stores.heal(ctx, n.name); herr == nil {
			_, err = n.kv.Create(ctx, key, nil)
		}
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return auth.ErrReplay
	}
	return err
}

// kvStore is the store of a bucket.
func kvStore(bucket string, create func(ctx context.Context) error, feeds ...*feed) *store {
	return &store{name: bucket, stream: "KV_" + bucket, create: create, feeds: feeds}
}

// watchCache mirrors a KV bucket into memory through a watcher, so lookups
// cost no round trip and changes reach this node within milliseconds.
type watchCache[T any] struct {
	kv       jetstream.KeyValue
	onChange func(key string, old, cur *T) // called without the lock held
	// reloaded, when set, runs (on a goroutine of its own) once the cache
	// has loaded a bucket that was created again.
	reloaded func()

	mu      sync.RWMutex
	entries map[string]T // Guarded by mu.
}

func openCache[T any](ctx, runCtx context.Context, srv *Server, cfg jetstream.KeyValueConfig, onChange func(string, *T, *T)) (*watchCache[T], error) {
	kv, err := jscreate.KeyValue(ctx, srv.js, cfg)
	if err != nil {
		return nil, fmt.Errorf("hub: bucket %s: %w", cfg.Bucket, err)
	}
	c := &watchCache[T]{kv: kv, onChange: onChange, entries: make(map[string]T)}
	st := kvStore(cfg.Bucket, func(ctx context.Context) error {
		_, err := jscreate.KeyValue(ctx, srv.js, cfg)
		return err
	}, &feed{start: func(ctx context.Context, fresh bool) (<-chan struct{}, error) { return c.follow(ctx, srv, fresh) }})
	if err := srv.stores.add(ctx, runCtx, st); err != nil {
		return nil, err
	}
	return c, nil
}

// follow starts the cache's watcher. Started anew on a bucket created
// again, it drops the entries the bucket no longer has once it has loaded
// those it has, telling onChange, as if they had been deleted.
func (c *watchCache[T]) follow(ctx context.Context, srv *Server, fresh bool) (<-chan struct{}, error) {
	seen := make(map[string]bool) // owned by the watcher goroutine
	loaded := make(chan struct{})
	err := srv.watchKV(ctx, c.kv, func(e jetstream.KeyValueEntry, live bool) {
		if !live {
			seen[e.Key()] = true
		}
		c.apply(srv, e, live)
	}, func() {
		if fresh {
			c.dropUnseen(seen)
			if c.reloaded != nil {
				srv.goTask(c.reloaded)
			}
		}
		close(loaded)
	})
	return loaded, err
}

// dropUnseen removes the entries that are not in seen.
func (c *watchCache[T]) dropUnseen(seen map[string]bool) {
	type gone struct {
		key string
		v   T
	}
	var drop []gone
	c.mu.Lock()
	for k, v := range c.entries {
		if !seen[k] {
			drop = append(drop, gone{k, v})
			delete(c.entries, k)
		}
	}
	c.mu.Unlock()
	if c.onChange == nil {
		return
	}
	for _, g := range drop {
		c.onChange(g.key, &g.v, nil)
	}
}

// watchKV follows every key of a bucket until ctx ends: apply gets each
// entry, with live false for those present at start, and loaded runs once
// those have been applied, on the watcher's goroutine, before any live
// one. A watcher that ends by itself (its stream was deleted) has the
// bucket checked at once.
func (srv *Server) watchKV(ctx context.Context, kv jetstream.KeyValue, apply func(e jetstream.KeyValueEntry, live bool), loaded func()) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("hub: watch %s: %w", kv.Bucket(), err)
	}
	srv.goTask(func() {
		kvwatch.Run(ctx, srv.nc, w, apply, loaded, func() {
			srv.log.Warn("bucket watcher ended; checking the bucket", "bucket", kv.Bucket())
			srv.stores.lost(kv.Bucket(), jetstream.ErrStreamNotFound)
		})
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
		Bucket: schema.BucketUsers, Description: "admin and viewer accounts", History: 1,
		Storage: jetstream.FileStorage, Replicas: srv.cfg.Replicas,
	}, us.changed)
	if err != nil {
		return nil, err
	}
	us.watchCache = c
	// A user store created again is empty: the admin user is created as
	// at the first start (of several nodes doing it at once, one does).
	c.reloaded = func() {
		ctx, cancel := context.WithTimeout(runCtx, storeHealTimeout)
		defer cancel()
		if err := us.bootstrap(ctx, srv.cfg.AdminPassword); err != nil {
			srv.log.Error("admin user not created in the user store created again", "err", err)
		}
	}
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
	*watchCache[schema.Device]
}

func openDeviceRegistry(ctx, runCtx context.Context, srv *Server) (*deviceRegistry, error) {
	c, err := openCache(ctx, runCtx, srv, jetstream.KeyValueConfig{
		Bucket: schema.BucketDevices, Description: "device registry: type and group per serial number", History: 1,
		Storage: jetstream.FileStorage, Replicas: srv.cfg.Replicas,
	}, func(sn string, old, cur *schema.Device) { srv.registryChanged(sn, cur) })
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
func (e staticEntry) Bucket() string                  { return schema.BucketUsers }
func (e staticEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// nonceWindow is how long a claimed nonce is kept: twice the clock skew a
// device may have (its timestamp may be that far either side of ours),
// and a margin.
func nonceWindow(cfg Config) time.Duration { return 2*cfg.MaxSkew + 10*time.Second }
