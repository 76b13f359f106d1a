package presence

import (
	"context"
	"errors"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// storeGone reports whether err says that the stream behind an operation
// does not exist (as the hub's store set tells it).
func storeGone(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}

// OpenSoftBucket creates or updates a bucket of soft state, entries their
// writers rewrite all the time (hub_presence). A single-replica bucket is
// created with asynchronous persistence: the server writes its entries to
// disk in batches instead of one write(2) each, and a server that crashes
// may lose the last milliseconds of writes, which the nodes rewrite anyway.
// Replicated streams flush asynchronously already, and do not take the
// setting. A stream's persistence is fixed at creation: an existing bucket
// keeps its own, whichever it is.
//
// Creation goes through jscreate (create, then update when the stream
// exists with another config; each call with its own timeout, tried again
// while JetStream forms).
func OpenSoftBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Replicas > 1 {
		return jscreate.KeyValue(ctx, js, cfg)
	}
	scfg := kvStreamConfig(cfg)
	scfg.PersistMode = jetstream.AsyncPersistMode
	_, err := jscreate.Ensure(ctx,
		func(ctx context.Context) (jetstream.Stream, error) { return js.CreateStream(ctx, scfg) },
		func(ctx context.Context) (jetstream.Stream, error) {
			// The stream exists with another config: it keeps the
			// persistence it was created with.
			info, err := js.Stream(ctx, scfg.Name)
			if err != nil {
				return nil, err
			}
			if info.CachedInfo().Config.PersistMode == jetstream.AsyncPersistMode {
				return js.UpdateStream(ctx, scfg)
			}
			if _, err := js.UpdateKeyValue(ctx, cfg); err != nil {
				return nil, err
			}
			return info, nil
		})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, jscreate.CallTimeout)
	defer cancel()
	return js.KeyValue(ctx, cfg.Bucket)
}

// Placement is where the stores of layout l are created: in the NATS
// cluster the node reaches, when it reaches one in data-centre mode (a
// supercluster shares one JetStream: each data centre's own state stays
// in it), else wherever JetStream puts them.
func Placement(l schema.Layout) *jetstream.Placement {
	if l.Cluster == "" || !l.DCMode() {
		return nil
	}
	return &jetstream.Placement{Cluster: l.Cluster}
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
		Placement:              cfg.Placement,
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
