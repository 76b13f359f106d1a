package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/node"
)

type (
	hubConfig  = hub.Config
	nodeConfig = node.Config
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func presenceKV(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctxT(t), hub.BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
