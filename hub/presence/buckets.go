package presence

import (
	"context"
	"errors"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// CreateOrUpdate runs create, a create-or-update of a bucket or stream,
// once more if another node created it at the same moment.
func CreateOrUpdate[T any](ctx context.Context, create func(context.Context) (T, error)) (T, error) {
	v, err := create(ctx)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		v, err = create(ctx)
	}
	return v, err
}

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
func OpenSoftBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
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
