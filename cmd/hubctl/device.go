package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/cli"
)

// deviceKeyCommand prints the key a device is provisioned with. It derives
// the key locally from the master secret, so it needs no NATS.
var deviceKeyCommand = &command{
	name:     "device-key",
	synopsis: "SN --master-secret-file FILE | --master-secret S",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		masterSecret := masterSecretFlags(fs, "the secret device keys derive from (HUB_MASTER_SECRET)", "")
		return func(args []string) (*job, error) {
			sn, err := serialArg(args)
			if err != nil {
				return nil, err
			}
			secret, err := masterSecret()
			if err != nil {
				return nil, err
			}
			return &job{run: func(_ context.Context, c *client) error {
				_, err := fmt.Fprintln(c.out, hex.EncodeToString(auth.DeviceKey([]byte(secret), sn)))
				return err
			}}, nil
		}
	},
}

// masterSecretFlags declares --master-secret and --master-secret-file on
// fs; the function returned reads the secret once the flags are parsed,
// and refuses a missing one (why it is needed is said after "required").
func masterSecretFlags(fs *flag.FlagSet, usage, why string) func() (string, error) {
	direct := fs.String("master-secret", "", usage)
	file := fs.String("master-secret-file", "", "read the master secret from this file (a trailing newline is not part of it)")
	return func() (string, error) {
		secret, err := cli.SecretFromFile("master-secret", *direct, "master-secret-file", *file)
		if err != nil {
			return "", err
		}
		if secret == "" {
			return "", errors.New("--master-secret-file (or HUB_MASTER_SECRET, --master-secret) is required" + why)
		}
		return secret, nil
	}
}

// deviceAddCommand writes a registry entry. It is a put, not a create:
// adding a registered device again changes its type or group in one step,
// and the node holding it reconnects it with the new values.
var deviceAddCommand = &command{
	name:     "device add",
	synopsis: "SN --type T [--group G]",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		typ := fs.String("type", "", "the device's type (required)")
		group := fs.String("group", "default", "the device's group")
		return func(args []string) (*job, error) {
			sn, err := serialArg(args)
			if err != nil {
				return nil, err
			}
			if *typ == "" {
				return nil, errors.New("--type is required")
			}
			if !validAttr(*typ) {
				return nil, fmt.Errorf("--type %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", *typ)
			}
			if !validAttr(*group) {
				return nil, fmt.Errorf("--group %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", *group)
			}
			value, _ := json.Marshal(schema.Device{Type: *typ, Group: *group})
			return &job{run: func(ctx context.Context, c *client) error {
				kv, err := c.bucket(ctx, schema.BucketDevices, true)
				if err != nil {
					return err
				}
				if _, err := kv.Put(ctx, sn, value); err != nil {
					return fmt.Errorf("add device %s: %w", sn, err)
				}
				return nil
			}}, nil
		}
	},
}

// deviceListCommand prints the registry, one "SN TYPE GROUP" line per
// device, sorted by serial number. None of the fields can hold a space, so
// the lines split cleanly on white space.
var deviceListCommand = listCommand("device list", schema.BucketDevices, func(sn string, d schema.Device) []any {
	return []any{sn, d.Type, d.Group}
})

// listCommand builds a command that prints one line per entry of a
// bucket, sorted by key, with the fields line gives.
func listCommand[T any](name, bucket string, line func(key string, v T) []any) *command {
	return &command{
		name:     name,
		synopsis: "",
		setup: func(*flag.FlagSet) func([]string) (*job, error) {
			return func(args []string) (*job, error) {
				if err := wantArgs(args); err != nil {
					return nil, err
				}
				return &job{run: func(ctx context.Context, c *client) error {
					entries, err := listBucket[T](ctx, c, bucket)
					if err != nil {
						return err
					}
					for _, e := range entries {
						if _, err := fmt.Fprintln(c.out, line(e.key, e.value)...); err != nil {
							return err
						}
					}
					return nil
				}}, nil
			}
		},
	}
}

// deviceRmCommand removes a registry entry; a device that is not
// registered is an error, so a typo in the serial number does not pass.
var deviceRmCommand = rmCommand[schema.Device]("device rm", "SN", "device", schema.BucketDevices, checkSerial)

// rmCommand builds a command that removes one entry of a bucket, checked
// against the revision it read, so that a concurrent change is not lost.
func rmCommand[T any](name, arg, what, bucket string, check func(string) error) *command {
	return &command{
		name:     name,
		synopsis: arg,
		setup: func(*flag.FlagSet) func([]string) (*job, error) {
			return func(args []string) (*job, error) {
				if err := wantArgs(args, arg); err != nil {
					return nil, err
				}
				key := args[0]
				if err := check(key); err != nil {
					return nil, err
				}
				return &job{run: func(ctx context.Context, c *client) error {
					kv, e, err := getEntry[T](ctx, c, bucket, what, key)
					if err != nil {
						return err
					}
					return removeEntry(ctx, kv, what, key, e.revision)
				}}, nil
			}
		},
	}
}

// serialArg checks that the arguments are exactly one valid serial number
// and returns it.
func serialArg(args []string) (string, error) {
	if err := wantArgs(args, "SN"); err != nil {
		return "", err
	}
	return args[0], checkSerial(args[0])
}

func checkSerial(sn string) error {
	if !auth.ValidSerial(sn) {
		return fmt.Errorf("invalid serial number %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", sn)
	}
	return nil
}

// validAttr reports whether s may be a device's type or group: a group
// name without the "*" wildcard, which only user group lists may hold.
// Both become NATS subject tokens, hence the narrow charset.
func validAttr(s string) bool { return s != "*" && auth.ValidGroup(s) }
