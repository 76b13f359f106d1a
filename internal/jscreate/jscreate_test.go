package jscreate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("x: %w", nats.ErrTimeout), true},
		{nats.ErrNoResponders, true},
		{jetstream.ErrJetStreamNotEnabled, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabledForAccount}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10052, Description: "stream configuration update can not change storage type"}, false},
		{context.Canceled, false},
		{errors.New("other"), false},
		{nil, false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	var b Backoff
	step := MinBackoff
	for i := range 12 {
		d := b.Next()
		if d < step/2 || d > step {
			t.Fatalf("wait %d: %v, want within [%v, %v]", i, d, step/2, step)
		}
		step = min(2*step, MaxBackoff)
	}
}

// Nodes creating the same stores at once all succeed; a node whose config
// differs updates the store; a change JetStream refuses is returned at
// once, not retried.
func TestKeyValueAndStream(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := jetstream.KeyValueConfig{Bucket: "b", History: 1, TTL: time.Minute, Storage: jetstream.FileStorage}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			js, err := jetstream.New(natstest.Connect(t, ns))
			if err == nil {
				_, err = KeyValue(ctx, js, cfg)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent create: %v", err)
		}
	}
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	cfg.TTL = 2 * time.Minute
	kv, err := KeyValue(ctx, js, cfg)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if st, _ := kv.Status(ctx); st.TTL() != 2*time.Minute {
		t.Fatalf("TTL after update: %v", st.TTL())
	}
	sc := jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}
	if _, err := Stream(ctx, js, sc); err != nil {
		t.Fatal(err)
	}
	sc.Storage = jetstream.MemoryStorage
	began := time.Now()
	if _, err := Stream(ctx, js, sc); err == nil {
		t.Fatal("storage change accepted")
	} else if time.Since(began) > CallTimeout {
		t.Fatalf("a refused change was retried: %v after %v", err, time.Since(began))
	}
}
