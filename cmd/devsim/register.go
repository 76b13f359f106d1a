package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/cli"
	"github.com/fleethub/fleethub/internal/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// registerOptions are the flags of --register and the secret file: how
// devsim joins NATS to write its devices into the registry.
type registerOptions struct {
	nats             natsconn.Config
	masterSecretFile string
	register         bool
}

func (o *registerOptions) flags(fs *flag.FlagSet) {
	o.nats.Register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&o.masterSecretFile, "master-secret-file", "", "read the master secret from this file (a trailing newline is not part of it)")
	fs.BoolVar(&o.register, "register", false, "write the simulated devices' registry entries (type, group) into hub_devices over NATS (the --nats-* flags), and exit")
}

// load reads the master secret file into masterSecret and checks the
// connection flags; a problem is a usage error.
func (o *registerOptions) load(masterSecret *string) ([]nats.Option, error) {
	var err error
	if *masterSecret, err = cli.SecretFromFile("master-secret", *masterSecret, "master-secret-file", o.masterSecretFile); err != nil {
		return nil, err
	}
	return o.nats.Options()
}

// registerTimeout bounds --register: connecting, and the puts.
func registerTimeout(devices int) time.Duration {
	return 10*time.Second + time.Duration(devices)*2*time.Millisecond
}

// errNoRegistry says what to do when hub_devices does not exist. devsim
// does not create it: a bucket made here could differ from the one the
// hub makes (hubctl owns that configuration), and the NATS system may
// not be the hub's at all.
var errNoRegistry = fmt.Errorf("bucket %s does not exist: start a hub node on this NATS system first (or add one device with hubctl device add)", schema.BucketDevices)

// register puts the registry entry of each of cfg's devices (the type and
// group --print-registry prints) into hub_devices, and returns how many
// it wrote. It joins NATS as an operator does (the operators' inbox
// prefix), since writing the registry is an operator's right.
func register(ctx context.Context, cfg Config, url string, opts []nats.Option) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout(cfg.Devices))
	defer cancel()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("devsim"), nats.Timeout(5 * time.Second), nats.NoReconnect(),
		natsconn.InboxPrefix(schema.OperatorInboxPrefix)}, opts...)...)
	if err != nil {
		return 0, fmt.Errorf("connect to NATS at %s: %w", natsconn.Redact(url), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, fmt.Errorf("JetStream: %w", err)
	}
	kv, err := js.KeyValue(ctx, schema.BucketDevices)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, errNoRegistry
	}
	if err != nil {
		return 0, fmt.Errorf("bucket %s: %w", schema.BucketDevices, err)
	}
	for i := range cfg.Devices {
		typ, s := kind(i)
		value, _ := json.Marshal(schema.Device{Type: typ, Group: s.group})
		if _, err := kv.Put(ctx, cfg.serial(i), value); err != nil {
			return i, fmt.Errorf("register %s: %w", cfg.serial(i), err)
		}
	}
	return cfg.Devices, nil
}
