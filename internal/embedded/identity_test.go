package embedded

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// writeConf writes a conf listening on a free loopback port, with its
// JetStream store in the test's directory.
func writeConf(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "nats.conf")
	text := "listen: 127.0.0.1:-1\njetstream { store_dir: \"" + filepath.ToSlash(filepath.Join(dir, "js")) + "\" }\n" + body
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func startConf(t *testing.T, cfg Config) *Server {
	t.Helper()
	ns, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// checkNode connects as the node does and uses JetStream.
func checkNode(t *testing.T, ns *Server) {
	t.Helper()
	nc, err := nats.Connect("", ns.ConnOptions()...)
	if err != nil {
		t.Fatalf("node connection: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "probe"}); err != nil {
		t.Fatalf("node JetStream: %v", err)
	}
}

// TestStartWithUsers: with users in the conf, the node's connection gets
// in with the identity Start made, strangers do not, the conf's users do.
func TestStartWithUsers(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"users":       `authorization { users: [ {user: backend, password: s3cret, permissions: { publish: "hub.>" }} ] }`,
		"single user": `authorization { user: backend, password: s3cret }`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := startConf(t, Config{ConfFile: writeConf(t, body)})
			if ns.Account() != GlobalAccount {
				t.Fatalf("account %q, want %s", ns.Account(), GlobalAccount)
			}
			checkNode(t, ns)
			if nc, err := nats.Connect(ns.ClientURL()); err == nil {
				nc.Close()
				t.Fatal("a client without credentials got in")
			} else if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("stranger: %v, want an authorization violation", err)
			}
			nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("backend", "s3cret"))
			if err != nil {
				t.Fatalf("the conf's user: %v", err)
			}
			nc.Close()
		})
	}
}

const twoAccounts = `accounts {
  HUB: { jetstream: enabled, users: [ {user: backend, password: b} ] }
  OTHER: { users: [ {user: other, password: o} ] }
  SYS: { users: [ {user: sys, password: s} ] }
}
system_account: SYS
`

func TestStartAccountChoice(t *testing.T) {
	t.Parallel()
	ns := startConf(t, Config{ConfFile: writeConf(t, twoAccounts)})
	if ns.Account() != "HUB" {
		t.Fatalf("account %q, want HUB (the only one with JetStream)", ns.Account())
	}
	checkNode(t, ns)
	// The backend of HUB sees the node's bucket: same account.
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("backend", "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.KeyValue(context.Background(), "probe"); err != nil {
		t.Fatalf("backend of HUB: %v", err)
	}

	named := startConf(t, Config{ConfFile: writeConf(t, strings.Replace(twoAccounts, "OTHER: {", "OTHER: { jetstream: enabled,", 1)), Account: "OTHER"})
	if named.Account() != "OTHER" {
		t.Fatalf("account %q, want OTHER (--nats-account)", named.Account())
	}
	checkNode(t, named)
}

// TestStartRefused: the configurations where the node cannot tell, or
// cannot have, its own identity fail with one line naming the flag.
func TestStartRefused(t *testing.T) {
	t.Parallel()
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	for _, tc := range []struct {
		name, conf, account, flag, says string
	}{
		{name: "token", conf: `authorization { token: t0k3n }`, flag: FlagConf, says: "instead of a token"},
		{name: "ambiguous", conf: strings.Replace(twoAccounts, "OTHER: {", "OTHER: { jetstream: enabled,", 1), flag: FlagAccount, says: "several accounts with JetStream (HUB, OTHER)"},
		{name: "no jetstream account", conf: strings.Replace(twoAccounts, "jetstream: enabled,", "", 1), flag: FlagAccount, says: "none has JetStream"},
		{name: "unknown account", conf: twoAccounts, account: "NOPE", flag: FlagAccount, says: "no such account"},
		{name: "account without users", conf: "", account: "HUB", flag: FlagAccount, says: "no users"},
		{name: "named account without jetstream", conf: twoAccounts, account: "OTHER", flag: FlagConf, says: "OTHER has no JetStream"},
		{name: "operator", conf: "trusted_keys: [ " + opPub + " ]\n", flag: FlagCreds, says: "--nats-creds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns, err := Start(context.Background(), Config{ConfFile: writeConf(t, tc.conf), Account: tc.account})
			if err == nil {
				ns.Shutdown()
				t.Fatal("started")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Flag != tc.flag || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line naming %s and saying %q", err, tc.flag, tc.says)
			}
		})
	}
}

// TestStartOperatorCreds: in operator (JWT) mode the node cannot add a
// user, so it uses the credentials it is given.
func TestStartOperatorCreds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opc := jwt.NewOperatorClaims(opPub)
	opJWT, err := opc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		kp, _ := nkeys.CreateAccount()
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		j, err := ac.Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		return kp, pub, j
	}
	hubKP, hubPub, hubJWT := account("HUB", true)
	_, sysPub, sysJWT := account("SYS", false)
	creds := func(acc nkeys.KeyPair, accPub string) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.IssuerAccount = accPub
		uj, err := uc.Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(uj, seed)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, upub+".creds")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	confText := "operator: " + opJWT + "\nsystem_account: " + sysPub + "\nresolver: MEMORY\nresolver_preload: {\n  " +
		hubPub + ": " + hubJWT + "\n  " + sysPub + ": " + sysJWT + "\n}\n"

	ns := startConf(t, Config{ConfFile: writeConf(t, confText), Credentials: []nats.Option{nats.UserCredentials(creds(hubKP, hubPub))}})
	if ns.Account() != hubPub {
		t.Fatalf("account %q, want the creds' account %s", ns.Account(), hubPub)
	}
	checkNode(t, ns)

	// Credentials the server does not take are refused, naming
	// --nats-creds: here a user JWT with another user's seed.
	good, err := os.ReadFile(creds(hubKP, hubPub))
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := nkeys.CreateUser()
	seed, _ := stranger.Seed()
	ujwt, err := jwt.ParseDecoratedJWT(good)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := jwt.FormatUserConfig(ujwt, seed)
	bad := filepath.Join(dir, "bad.creds")
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// In process, the server's "Authorization Violation" waits for the
	// client to read it until the write deadline: keep that short here.
	_, err = Start(context.Background(), Config{ConfFile: writeConf(t, "write_deadline: \"1s\"\n"+confText), Credentials: []nats.Option{nats.UserCredentials(bad)}})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Flag != FlagCreds {
		t.Fatalf("wrong creds: err = %v, want a refusal naming --nats-creds", err)
	}
}

// TestShippedNatsConfStarts: the nats.conf at the repository root starts
// (on a free port and a temporary store instead of its fixed ones).
func TestShippedNatsConfStarts(t *testing.T) {
	t.Parallel()
	cfg := Config{ConfFile: filepath.Join("..", "..", "nats.conf")}
	opts, listenFlag, err := load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts.Port, opts.StoreDir = -1, t.TempDir()
	ns, err := start(context.Background(), cfg, opts, listenFlag)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	checkNode(t, ns)
}

// TestIdentityAuthCallout: with an auth callout, the node's user is one
// of the conf's own (auth_users), not one the callout service decides.
func TestIdentityAuthCallout(t *testing.T) {
	t.Parallel()
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	cfg := Config{ConfFile: writeConf(t, `authorization {
  users: [ {user: auth, password: pw} ]
  auth_callout { issuer: `+accPub+`, auth_users: [ auth ] }
}`)}
	opts, _, err := load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := identity(opts, cfg); err != nil {
		t.Fatal(err)
	}
	if len(opts.Nkeys) != 1 || opts.AuthCallout == nil || !slices.Contains(opts.AuthCallout.AuthUsers, opts.Nkeys[0].Nkey) {
		t.Fatalf("node user %v not in auth_users %v", opts.Nkeys, opts.AuthCallout)
	}
}
