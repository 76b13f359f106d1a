package hub

import (
	"context"
	pres "github.com/fleethub/fleethub/hub/presence"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// A soft bucket is the bucket nats.go makes, but persisted asynchronously;
// a bucket that exists keeps its persistence, and nodes opening it at once
// all succeed.
func TestOpenSoftBucket(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := func(bucket string, ttl time.Duration) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: bucket, Description: "d", History: 1, TTL: ttl, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage}
	}
	streamCfg := func(bucket string) jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			if _, err := pres.OpenSoftBucket(ctx, js, cfg("soft", time.Minute)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent open: %v", err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, cfg("plain", time.Minute)); err != nil {
		t.Fatal(err)
	}
	soft, plain := streamCfg("soft"), streamCfg("plain")
	if soft.PersistMode != jetstream.AsyncPersistMode || plain.PersistMode != jetstream.DefaultPersistMode {
		t.Fatalf("persist modes %v and %v", soft.PersistMode, plain.PersistMode)
	}
	soft.Name, soft.Subjects, soft.PersistMode = plain.Name, plain.Subjects, plain.PersistMode
	soft.Metadata, plain.Metadata = nil, nil // server version stamps
	if !reflect.DeepEqual(soft, plain) {
		t.Fatalf("soft bucket's stream differs from nats.go's:\n%+v\n%+v", soft, plain)
	}

	// Reopened with a new TTL: updated, still asynchronous.
	kv, err := pres.OpenSoftBucket(ctx, js, cfg("soft", 2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c := streamCfg("soft"); c.MaxAge != 2*time.Minute || c.PersistMode != jetstream.AsyncPersistMode {
		t.Fatalf("after reopening: max age %v, persist mode %v", c.MaxAge, c.PersistMode)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("get: %v %v", e, err)
	}
	// A bucket made before, by nats.go, keeps its persistence.
	if _, err := pres.OpenSoftBucket(ctx, js, cfg("plain", 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if c := streamCfg("plain"); c.MaxAge != 2*time.Minute || c.PersistMode != jetstream.DefaultPersistMode {
		t.Fatalf("existing bucket: max age %v, persist mode %v", c.MaxAge, c.PersistMode)
	}
}
