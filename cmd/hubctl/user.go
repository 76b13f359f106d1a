package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go/jetstream"
)

// passwordCost is the bcrypt cost of the hashes hubctl stores; 0 is
// bcrypt's default. Tests lower it: the nodes' logins then run quickly
// under the race detector too.
var passwordCost = 0

// userAddCommand creates an admin or viewer account. It is create-only:
// overwriting an existing account by mistake would change its password.
var userAddCommand = &command{
	name:     "user add",
	synopsis: "NAME --password P --role admin|viewer --groups a,b|*",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		password := fs.String("password", "", "the user's password, 1 to 72 bytes (HUB_PASSWORD)")
		role := fs.String("role", "", "admin or viewer (required)")
		groups := fs.String("groups", "", "comma-separated groups the user sees, or * for all (required)")
		return func(args []string) (*job, error) {
			name, err := usernameArg(args)
			if err != nil {
				return nil, err
			}
			r, err := auth.ParseRole(*role)
			if err != nil {
				return nil, fmt.Errorf("--role %q: want admin or viewer", *role)
			}
			if *groups == "" {
				return nil, errors.New("--groups is required (a,b or * for all)")
			}
			gs, err := auth.ParseGroups(*groups)
			if err != nil {
				return nil, fmt.Errorf("--groups: %w", err)
			}
			hash, err := hashPassword(*password)
			if err != nil {
				return nil, err
			}
			return &job{run: func(ctx context.Context, c *client) error {
				u := auth.User{Name: name, Role: r, Groups: gs, PasswordHash: hash, UpdatedAt: time.Now().UnixMilli()}
				value, err := marshalUser(u)
				if err != nil {
					return err
				}
				kv, err := c.bucket(ctx, schema.BucketUsers, true)
				if err != nil {
					return err
				}
				if _, err := kv.Create(ctx, name, value); err != nil {
					if errors.Is(err, jetstream.ErrKeyExists) {
						return fmt.Errorf("user %s already exists", name)
					}
					return fmt.Errorf("add user %s: %w", name, err)
				}
				return nil
			}}, nil
		}
	},
}

// userListCommand prints one "NAME ROLE GROUPS" line per user, sorted by
// name, the groups joined by commas ("*" for all); never a password hash.
var userListCommand = listCommand("user list", schema.BucketUsers, func(name string, u auth.User) []any {
	return []any{name, u.Role, strings.Join(u.Groups, ",")}
})

// userPasswdCommand replaces a user's password, keeping role and groups.
// It bumps UpdatedAt, which is what makes the nodes refuse the tokens
// issued before and end the user's open sessions.
var userPasswdCommand = &command{
	name:     "user passwd",
	synopsis: "NAME --password P",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		password := fs.String("password", "", "the new password, 1 to 72 bytes (HUB_PASSWORD)")
		return func(args []string) (*job, error) {
			name, err := usernameArg(args)
			if err != nil {
				return nil, err
			}
			hash, err := hashPassword(*password)
			if err != nil {
				return nil, err
			}
			return &job{run: func(ctx context.Context, c *client) error {
				kv, e, err := getEntry[auth.User](ctx, c, schema.BucketUsers, "user", name)
				if err != nil {
					return err
				}
				u := e.value
				u.PasswordHash = hash
				// Strictly later than before even within one millisecond:
				// the nodes act on a change of UpdatedAt, not of the hash.
				u.UpdatedAt = max(time.Now().UnixMilli(), u.UpdatedAt+1)
				value, err := marshalUser(u)
				if err != nil {
					return err
				}
				// Update, not Put: a concurrent change (another passwd, an
				// rm) is reported instead of being overwritten or undone.
				if _, err := kv.Update(ctx, name, value, e.revision); err != nil {
					if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
						return fmt.Errorf("user %s changed while the password was being set; try again", name)
					}
					return fmt.Errorf("set password of user %s: %w", name, err)
				}
				return nil
			}}, nil
		}
	},
}

// userRmCommand removes an account; the nodes end its sessions.
var userRmCommand = rmCommand[auth.User]("user rm", "NAME", "user", schema.BucketUsers, checkUsername)

// usernameArg checks that the arguments are exactly one valid user name
// and returns it.
func usernameArg(args []string) (string, error) {
	if err := wantArgs(args, "NAME"); err != nil {
		return "", err
	}
	return args[0], checkUsername(args[0])
}

func checkUsername(name string) error {
	if !auth.ValidUsername(name) {
		return fmt.Errorf("invalid user name %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", name)
	}
	return nil
}

// hashPassword hashes a password given on the command line; hashing
// happens while the arguments are checked, so a bad password is a usage
// error and no connection is made for it.
func hashPassword(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("--password (or HUB_PASSWORD) is required")
	}
	hash, err := auth.HashPassword(pw, passwordCost)
	if err != nil {
		return "", fmt.Errorf("--password: %w", err)
	}
	return hash, nil
}

// marshalUser validates u before it is stored: auth.User.Validate is the
// definition of a usable account, and a record that fails it could only
// lock its user out.
func marshalUser(u auth.User) ([]byte, error) {
	if err := u.Validate(); err != nil {
		return nil, fmt.Errorf("user %s: %w", u.Name, err)
	}
	return json.Marshal(u)
}
