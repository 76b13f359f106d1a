// Package bustest runs the shipped docs/nats-accounts.conf, unchanged, on
// a nats-server process, with an nkey per role made at run time, and opens
// connections as each role: a hub node, a backend, an operator (hubctl).
// Its tests try every permission row of docs/security.md both ways.
package bustest

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Role names a user of the shipped configuration.
type Role string

// The roles of docs/nats-accounts.conf.
const (
	RoleNode     Role = "node"
	RoleBackend  Role = "backend"
	RoleOperator Role = "operator"
)

// InboxPrefix is the inbox prefix a role's connections use: the
// configuration lets each role subscribe to its own only. Backends keep
// nats.go's default ("_INBOX"), spelled "" here.
func (r Role) InboxPrefix() string {
	switch r {
	case RoleNode:
		return schema.NodeInboxPrefix
	case RoleOperator:
		return schema.OperatorInboxPrefix
	}
	return ""
}

// Key is a role's nkey user.
type Key struct {
	Public string
	// SeedFile holds the seed on one line, as --nats-nkey reads it.
	SeedFile string
}

// Bus is a nats-server process running docs/nats-accounts.conf.
type Bus struct {
	Proc *natstest.Proc
	Keys map[Role]Key
}

// ConfPath is the path of docs/nats-accounts.conf in the source tree.
func ConfPath(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("bustest: no caller information to find docs/nats-accounts.conf")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "docs", "nats-accounts.conf")
}

// Start makes a key per role and runs the shipped configuration on a
// free loopback port, its JetStream data in a temporary directory. The
// process stops when the test ends.
func Start(t testing.TB) *Bus {
	t.Helper()
	dir := t.TempDir()
	b := &Bus{Keys: make(map[Role]Key)}
	port := natstest.FreePort(t)
	env := []string{
		"FLEETHUB_NATS_PORT=" + strconv.Itoa(port),
		"FLEETHUB_NATS_STORE=" + filepath.Join(dir, "jetstream"),
	}
	for _, r := range []Role{RoleNode, RoleBackend, RoleOperator} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		k := Key{Public: pub, SeedFile: filepath.Join(dir, string(r)+".nk")}
		if err := os.WriteFile(k.SeedFile, append(seed, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		b.Keys[r] = k
		env = append(env, "FLEETHUB_"+strings.ToUpper(string(r))+"_NKEY="+pub)
	}
	b.Proc = natstest.StartProcFile(t, port, ConfPath(t), env...)
	return b
}

// Errors records the asynchronous errors of a connection (permission
// violations of publishes and subscriptions).
type Errors struct {
	mu   sync.Mutex
	errs []string
}

func (e *Errors) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err.Error())
}

// Has reports whether an error that contains s was recorded.
func (e *Errors) Has(s string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.errs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// All is every error recorded so far.
func (e *Errors) All() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.errs...)
}

// Conn is a connection as one role.
type Conn struct {
	*nats.Conn
	Role   Role
	Errors *Errors
}

// Connect opens a connection as role r, with its key and inbox prefix;
// permission errors on subscribing are returned by NextMsg. It is closed
// when the test ends.
func (b *Bus) Connect(t testing.TB, r Role, opts ...nats.Option) *Conn {
	t.Helper()
	k, ok := b.Keys[r]
	if !ok {
		t.Fatalf("bustest: no role %q", r)
	}
	auth, err := nats.NkeyOptionFromSeed(k.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	errs := &Errors{}
	all := []nats.Option{
		auth, nats.Name(string(r)), nats.PermissionErrOnSubscribe(true), nats.Timeout(10 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs.add(err) }),
	}
	if p := r.InboxPrefix(); p != "" {
		all = append(all, nats.CustomInboxPrefix(p))
	}
	all = append(all, opts...)
	nc, err := nats.Connect(b.Proc.URL(), all...)
	if err != nil {
		t.Fatalf("bustest: connect as %s: %v", r, err)
	}
	t.Cleanup(nc.Close)
	return &Conn{Conn: nc, Role: r, Errors: errs}
}
