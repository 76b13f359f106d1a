package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/internal/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connectTimeout bounds dialing each NATS server; nats.Connect takes no
// context, and the default would let a black-holed address eat most of
// the overall budget.
const connectTimeout = 3 * time.Second

// client is a command's access to the hub's NATS system. It connects on
// first use, so commands that need no NATS (device-key) never dial it.
type client struct {
	url string
	// opts are the credentials and TLS of the connection flags.
	opts []nats.Option
	// inbox is the connection's inbox prefix (--nats-inbox-prefix).
	inbox string
	// jsDomain is the JetStream domain of the hub's stores (--js-domain).
	jsDomain string
	out      io.Writer

	// refused is the last permission violation the server reported on
	// the connection (asynchronously: the call it refused fails later,
	// usually with a timeout).
	refused atomic.Pointer[string]
	// abort ends the command at once when the server refuses it, rather
	// than let the refused call wait out its timeout.
	abort context.CancelFunc

	nc *nats.Conn
	js jetstream.JetStream
}

// conn returns the NATS connection, connecting if needed. A short-lived
// command does not reconnect: a lost connection fails it at once.
func (c *client) conn() (*nats.Conn, error) {
	if c.nc != nil {
		return c.nc, nil
	}
	// Replies come to the operators' own inbox prefix: a backend allowed
	// nats.go's default _INBOX.> cannot read users or password hashes.
	inbox := c.inbox
	if inbox == "" {
		inbox = schema.OperatorInboxPrefix
	}
	opts := append([]nats.Option{nats.Name("hubctl"), nats.Timeout(connectTimeout), nats.NoReconnect(),
		natsconn.InboxPrefix(inbox), nats.PermissionErrOnSubscribe(true),
		// The server's asynchronous errors are kept for explain, not
		// printed: a failing command prints one line.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				msg := err.Error()
				c.refused.Store(&msg)
				if c.abort != nil {
					c.abort()
				}
			}
		})}, c.opts...)
	nc, err := nats.Connect(c.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", natsconn.Redact(c.url), err)
	}
	c.nc = nc
	return nc, nil
}

// jetStream is the hub's JetStream, made once: that of --js-domain when
// it is given.
func (c *client) jetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	if c.js != nil {
		return c.js, nil
	}
	var err error
	if c.jsDomain != "" {
		c.js, err = jetstream.NewWithDomain(nc, c.jsDomain)
	} else {
		c.js, err = jetstream.New(nc)
	}
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	return c.js, nil
}

// explain turns the error of a command the server's permissions refused
// (a JetStream call then times out) into the permission error itself.
func (c *client) explain(err error) error {
	if p := c.refused.Load(); p != nil && !errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("refused by the NATS permissions of these credentials: %s", strings.TrimPrefix(*p, "nats: permissions violation: "))
	}
	return err
}

func (c *client) close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

// bucketConfigs are the hub's KV buckets as hub/stores.go creates them, so
// that hubctl creating one first (before any node has run) leaves exactly
// what a node would have made.
var bucketConfigs = map[string]jetstream.KeyValueConfig{
	schema.BucketUsers: {
		Bucket: schema.BucketUsers, Description: "admin and viewer accounts",
		History: 1, Storage: jetstream.FileStorage,
	},
	schema.BucketDevices: {
		Bucket: schema.BucketDevices, Description: "device registry: type and group per serial number",
		History: 1, Storage: jetstream.FileStorage,
	},
}

// errNoBucket is returned by bucket when the bucket does not exist and the
// caller only reads: there is nothing to read, and a read should not leave
// a bucket behind on a NATS system that may not be the hub's.
var errNoBucket = errors.New("bucket does not exist")

// bucket opens one of the hub's KV buckets. When it does not exist yet (no
// node has run), create makes it with the hub's own configuration;
// otherwise errNoBucket is returned.
func (c *client) bucket(ctx context.Context, name string, create bool) (jetstream.KeyValue, error) {
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	js, err := c.jetStream(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if !create {
			return nil, errNoBucket
		}
		kv, err = jscreate.KeyValue(ctx, js, bucketConfigs[name])
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	return kv, nil
}

// entry is one key of a bucket with its JSON value decoded.
type entry[T any] struct {
	key      string
	value    T
	revision uint64
}

// listBucket returns every live entry of a bucket, sorted by key; a
// missing bucket is an empty list. It reads with one watcher rather than
// a Get per key, so a large registry lists in one pass.
func listBucket[T any](ctx context.Context, c *client, name string) ([]entry[T], error) {
	kv, err := c.bucket(ctx, name, false)
	if errors.Is(err, errNoBucket) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", name, err)
	}
	defer func() { _ = w.Stop() }()
	var out []entry[T]
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", name, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read bucket %s: watcher stopped", name)
			}
			if e == nil { // every current value has been delivered
				sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				// Named, not skipped: the nodes ignore such a record, so
				// the operator must learn of it (and can rm it).
				return nil, fmt.Errorf("bucket %s: key %s holds invalid JSON: %w", name, e.Key(), err)
			}
			out = append(out, entry[T]{key: e.Key(), value: v, revision: e.Revision()})
		}
	}
}

// getEntry reads one key of a bucket, reporting a missing bucket or key as
// "<what> <key> not found".
func getEntry[T any](ctx context.Context, c *client, name, what, key string) (jetstream.KeyValue, entry[T], error) {
	kv, err := c.bucket(ctx, name, false)
	if errors.Is(err, errNoBucket) {
		return nil, entry[T]{}, fmt.Errorf("%s %s not found", what, key)
	}
	if err != nil {
		return nil, entry[T]{}, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, entry[T]{}, fmt.Errorf("%s %s not found", what, key)
	}
	if err != nil {
		return nil, entry[T]{}, fmt.Errorf("read %s %s: %w", what, key, err)
	}
	var v T
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return nil, entry[T]{}, fmt.Errorf("%s %s: stored record is invalid JSON: %w", what, key, err)
	}
	return kv, entry[T]{key: key, value: v, revision: e.Revision()}, nil
}

// removeEntry deletes key if it still has revision rev, so that a record
// changed by someone else since it was read is not removed blindly.
func removeEntry(ctx context.Context, kv jetstream.KeyValue, what, key string, rev uint64) error {
	if err := kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("remove %s %s: %w", what, key, err)
	}
	return nil
}

// checkInbox refuses an inbox prefix nats.go would refuse, before any dial.
func checkInbox(p string) error {
	if p == "" || strings.ContainsAny(p, "*> \t") || strings.HasSuffix(p, ".") {
		return fmt.Errorf("--nats-inbox-prefix %q: want subject tokens without wildcards, spaces or a trailing dot", p)
	}
	return nil
}
