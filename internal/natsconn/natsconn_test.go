package natsconn_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/cli"
	"github.com/fleethub/fleethub/internal/natsconn"
	"github.com/fleethub/fleethub/internal/natsconn/authtest"
	"github.com/fleethub/fleethub/internal/testpki"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// parse registers the flags on a fresh flag set and parses args (and env,
// through cli.ApplyEnv) as the commands do.
func parse(t *testing.T, env map[string]string, args ...string) *natsconn.Config {
	t.Helper()
	var c natsconn.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Register(fs, "nats://127.0.0.1:4222")
	if err := cli.ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c
}

func connect(c *natsconn.Config) (*nats.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	return nats.Connect(c.URL, append(opts, nats.Timeout(5*time.Second), natsconn.InboxPrefix(schema.OperatorInboxPrefix))...)
}

// checkJetStream fails unless nc reaches JetStream in its account.
func checkJetStream(t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
}

// TestConnect: each kind of server lets the good flags in, with JetStream,
// and refuses the bad ones with the server's reason.
func TestConnect(t *testing.T) {
	for _, s := range authtest.All(t) {
		t.Run(s.Name, func(t *testing.T) {
			nc, err := connect(parse(t, nil, s.Flags...))
			if err != nil {
				t.Fatalf("connect with %q: %v", s.Flags, err)
			}
			defer nc.Close()
			if inbox := nc.NewInbox(); !strings.HasPrefix(inbox, schema.OperatorInboxPrefix+".") {
				t.Errorf("inbox %q lacks prefix %s", inbox, schema.OperatorInboxPrefix)
			}
			checkJetStream(t, nc)

			nc2, err := connect(parse(t, nil, s.Bad...))
			if err == nil {
				nc2.Close()
				t.Fatalf("connect with %q succeeded", s.Bad)
			}
			if !strings.Contains(err.Error(), s.BadError) {
				t.Fatalf("connect with %q: %v, want %q", s.Bad, err, s.BadError)
			}
			// And with no credentials at all.
			nc3, err := connect(parse(t, nil, "--nats-url", s.URL))
			if err == nil {
				nc3.Close()
				t.Fatalf("connect without credentials succeeded")
			}
		})
	}
}

// TestPasswordSources: the password in the URL, in HUB_NATS_PASSWORD and
// on the command line all work, and the URL's is redacted.
func TestPasswordSources(t *testing.T) {
	s := authtest.Password(t)
	withPW := authtest.PasswordURL(t, s)
	pw, _, _ := strings.Cut(strings.TrimPrefix(withPW, "nats://hub:"), "@")
	for name, c := range map[string]*natsconn.Config{
		"url":  parse(t, nil, "--nats-url", withPW),
		"env":  parse(t, map[string]string{"HUB_NATS_URL": s.URL, "HUB_NATS_USER": "hub", "HUB_NATS_PASSWORD": pw}),
		"flag": parse(t, nil, "--nats-url", s.URL, "--nats-user", "hub", "--nats-password", pw),
	} {
		nc, err := connect(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nc.Close()
	}
	if r := natsconn.Redact(withPW + ",nats://tok@127.0.0.1:1,127.0.0.1:2"); strings.Contains(r, pw) || strings.Contains(r, "tok") ||
		r != "nats://REDACTED@127.0.0.1:"+strings.TrimPrefix(s.URL, "nats://127.0.0.1:")+",nats://REDACTED@127.0.0.1:1,127.0.0.1:2" {
		t.Fatalf("redacted %q", r)
	}
	if r := natsconn.Redact("nats://u:p/a@ss@127.0.0.1:1"); r != "nats://REDACTED@127.0.0.1:1" {
		t.Fatalf("redacted %q", r)
	}
}

// TestOptionsRefused: every bad combination or file is one line naming
// the flag, found before any dial.
func TestOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	akp, _ := nkeys.CreateAccount()
	aseed, _ := akp.Seed()
	ukp, _ := nkeys.CreateUser()
	useed, _ := ukp.Seed()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	token, _ := uc.Encode(akp)
	otherKP, _ := nkeys.CreateUser()
	otherSeed, _ := otherKP.Seed()
	good, _ := jwt.FormatUserConfig(token, useed)
	// FormatUserConfig refuses a seed of another user, so swap it in.
	mismatched := strings.Replace(string(good), string(useed), string(otherSeed), 1)
	uc.Expires = time.Now().Add(-time.Hour).Unix()
	expiredToken, _ := uc.Encode(akp)
	expired, _ := jwt.FormatUserConfig(expiredToken, useed)
	ca := testpki.NewCA(t)
	leaf := ca.Client(t, "x")
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-creds", missing}, "--nats-creds " + missing + ": no such file"},
		{[]string{"--nats-creds", file("junk.creds", "hello\n")}, "--nats-creds"},
		{[]string{"--nats-creds", file("mismatch.creds", mismatched)}, "not the key the JWT was issued to"},
		{[]string{"--nats-creds", file("expired.creds", string(expired))}, "expired"},
		{[]string{"--nats-nkey", missing}, "--nats-nkey " + missing + ": no such file"},
		{[]string{"--nats-nkey", file("account.nk", string(aseed)+"\n")}, "not a user nkey seed (SU...): account seed"},
		{[]string{"--nats-nkey", file("junk.nk", "SUnotaseed\n")}, "--nats-nkey"},
		{[]string{"--nats-nkey", file("two.nk", string(useed)+"\n"+string(useed)+"\n")}, "one line"},
		{[]string{"--nats-nkey", file("empty.nk", "\n")}, "empty"},
		{[]string{"--nats-user", "u"}, "--nats-user needs --nats-password-file"},
		{[]string{"--nats-password", "p"}, "--nats-password needs --nats-user"},
		{[]string{"--nats-user", "u", "--nats-password", "p", "--nats-password-file", file("pw", "p\n")}, "--nats-password and --nats-password-file both given"},
		{[]string{"--nats-user", "u", "--nats-password-file", missing}, "--nats-password-file " + missing},
		{[]string{"--nats-user", "u", "--nats-password-file", file("empty-pw", "\n")}, "empty"},
		{[]string{"--nats-nkey", file("u.nk", string(useed)), "--nats-user", "u", "--nats-password", "p"}, "--nats-nkey and --nats-user: give one"},
		{[]string{"--nats-url", "nats://u:secret@127.0.0.1:1", "--nats-user", "u", "--nats-password", "p"}, "--nats-user and a user in --nats-url"},
		{[]string{"--nats-url", "nats://u:secret@127.0.0.1:1%zz"}, "not a valid URL"},
		{[]string{"--nats-tls-cert", leaf.CertFile}, "--nats-tls-cert needs --nats-tls-key"},
		{[]string{"--nats-tls-key", leaf.KeyFile}, "--nats-tls-key needs --nats-tls-cert"},
		{[]string{"--nats-tls-cert", leaf.CertFile, "--nats-tls-key", ca.File}, "--nats-tls-cert " + leaf.CertFile},
		{[]string{"--nats-tls-ca", missing}, "--nats-tls-ca " + missing + ": no such file"},
		{[]string{"--nats-tls-ca", file("notpem", "hello")}, "no PEM certificate"},
	} {
		_, err := parse(t, nil, tc.args...).Options()
		if err == nil {
			t.Errorf("%q: accepted", tc.args)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "secret") {
			t.Errorf("%q: %q, want one line with %q", tc.args, msg, tc.want)
		}
	}
}

// TestTLSRequired: with a CA given, a server without TLS is refused
// rather than used in plain text.
func TestTLSRequired(t *testing.T) {
	s := authtest.Password(t)
	ca := testpki.NewCA(t)
	c := parse(t, nil, append(s.Flags, "--nats-tls-ca", ca.File)...)
	if !c.TLS() {
		t.Fatal("TLS() false with --nats-tls-ca")
	}
	nc, err := connect(c)
	if err == nil {
		nc.Close()
		t.Fatal("connected in plain text with --nats-tls-ca")
	}
	if !errors.Is(err, nats.ErrSecureConnWanted) {
		t.Fatalf("err %v, want %v", err, nats.ErrSecureConnWanted)
	}
}

func TestAuthName(t *testing.T) {
	for want, args := range map[string][]string{
		"none":  nil,
		"url":   {"--nats-url", "nats://a:b@127.0.0.1:1"},
		"user":  {"--nats-user", "u"},
		"nkey":  {"--nats-nkey", "f"},
		"creds": {"--nats-creds", "f"},
	} {
		if got := parse(t, nil, args...).Auth(); got != want {
			t.Errorf("%q: Auth() = %q, want %q", args, got, want)
		}
	}
}
