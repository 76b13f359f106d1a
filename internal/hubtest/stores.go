package hubtest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func put(t testing.TB, nc *nats.Conn, bucket, key string, v any) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	b, _ := json.Marshal(v)
	if _, err := kv.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
}

// PutUser writes a user into hub_users, as hubctl does. Nodes see it
// through their watchers within moments.
func PutUser(t testing.TB, nc *nats.Conn, name, password string, role auth.Role, groups ...string) {
	t.Helper()
	hash, err := auth.HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	put(t, nc, schema.BucketUsers, name, auth.User{Name: name, Role: role, Groups: groups, PasswordHash: hash, UpdatedAt: time.Now().UnixMilli()})
}

// PutDevice writes a registry entry into hub_devices.
func PutDevice(t testing.TB, nc *nats.Conn, sn, typ, group string) {
	t.Helper()
	put(t, nc, schema.BucketDevices, sn, schema.Device{Type: typ, Group: group})
}
