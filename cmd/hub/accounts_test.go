package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/bustest"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// TestEmbeddedShippedAccounts runs the one-binary secure setup: a node
// whose embedded server runs docs/nats-accounts.conf as shipped. The node
// joins the fleet's account with its own generated identity; a backend
// with the backend key follows its records and pushes to its devices, and
// is refused what the backend role may not do.
func TestEmbeddedShippedAccounts(t *testing.T) {
	dir := t.TempDir()
	port := natstest.FreePort(t)
	t.Setenv("FLEETHUB_NATS_PORT", strconv.Itoa(port))
	t.Setenv("FLEETHUB_NATS_STORE", filepath.Join(dir, "js"))
	seeds := map[string]string{}
	for _, role := range []string{"node", "backend", "operator"} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		seeds[role] = filepath.Join(dir, role+".nk")
		if err := os.WriteFile(seeds[role], seed, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("FLEETHUB_"+strings.ToUpper(role)+"_NKEY", pub)
	}
	o := serveConf(t, bustest.ConfPath(t))
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("a client without credentials got into the embedded server")
	}
	opt, err := nats.NkeyOptionFromSeed(seeds["backend"])
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var violations []string
	backend, err := nats.Connect(url, opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		violations = append(violations, err.Error())
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	recs := watchRecords(t, backend)

	dev := hubtest.Dial(t, "ws://"+o.listen+"/ws", nil)
	dev.MustOK("/auth/device", hubtest.DeviceArgs("ACC-1", "retail"))
	recs.waitN(t, "ACC-1", 1, 10*time.Second)

	// Allowed: a push reaches the device.
	natstest.Eventually(t, 10*time.Second, func() error {
		if err := backend.Publish("hub.dev.ACC-1.push", []byte(`{"service":"/note/x","values":{"n":1}}`)); err != nil {
			return err
		}
		return backend.Flush()
	})
	dev.Next(func(m hubtest.Msg) bool { return m.Op == "push" && m.Service == "/note/x" })

	// Refused: a forged takeover and a write to the users.
	_ = backend.Publish("hub.ctl.takeover", []byte(`{"sn":"ACC-1"}`))
	js, _ := jetstream.New(backend)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, "$KV."+schema.BucketUsers+".evil", []byte(`{}`)); err == nil {
		t.Fatal("the backend wrote hub_users")
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		all := strings.Join(violations, "\n")
		for _, subj := range []string{`"hub.ctl.takeover"`, `"$KV.hub_users.evil"`} {
			if !strings.Contains(all, "Publish to "+subj) {
				return errors.New("no permission violation for " + subj + " yet: " + all)
			}
		}
		return nil
	})
	// The device is still connected: it answers a push after the forgery.
	if err := backend.Publish("hub.dev.ACC-1.push", []byte(`{"service":"/note/y","values":{}}`)); err != nil {
		t.Fatal(err)
	}
	dev.Next(func(m hubtest.Msg) bool { return m.Op == "push" && m.Service == "/note/y" })
}
