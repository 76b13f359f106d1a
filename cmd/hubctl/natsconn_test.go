package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/internal/natsconn/authtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nkeys"
)

// TestNATSConn: hubctl with each kind of credentials (flags before or
// after the command name) adds and lists devices; with wrong ones or none
// it fails with one line.
func TestNATSConn(t *testing.T) {
	t.Parallel()
	for _, s := range authtest.All(t) {
		t.Run(s.Name, func(t *testing.T) {
			sn := "NC-" + s.Name
			ok(t, hubctl(append(append([]string{}, s.Flags...), "device", "add", sn, "--type", "dog", "--group", "g1")...))
			if out := ok(t, hubctl(append([]string{"device", "list"}, s.Flags...)...)); out != sn+" dog g1\n" {
				t.Fatalf("device list: %q", out)
			}
			line := failed(t, hubctl(append([]string{"device", "list"}, s.Bad...)...), 1)
			if !strings.HasPrefix(line, "hubctl: connect to NATS at "+s.URL+": ") || !strings.Contains(line, s.BadError) {
				t.Fatalf("bad credentials: %q, want the reason %q", line, s.BadError)
			}
			failed(t, hubctl("device", "list", "--nats-url", s.URL), 1)
		})
	}
}

// TestNATSPasswordEnv: the password from HUB_NATS_PASSWORD or in the URL;
// the URL's is not repeated in an error, nor an environment password in
// -h. Not parallel: it sets environment variables.
func TestNATSPasswordEnv(t *testing.T) {
	s := authtest.Password(t)
	withPW := authtest.PasswordURL(t, s)
	pw, _, _ := strings.Cut(strings.TrimPrefix(withPW, "nats://hub:"), "@")
	ok(t, hubctl("device", "add", "PW-1", "--type", "t", "--nats-url", withPW))

	t.Setenv("HUB_NATS_URL", s.URL)
	t.Setenv("HUB_NATS_USER", "hub")
	t.Setenv("HUB_NATS_PASSWORD", pw)
	if out := ok(t, hubctl("device", "list")); out != "PW-1 t default\n" {
		t.Fatalf("device list: %q", out)
	}
	r := hubctl("device", "list", "-h")
	if r.code != 0 || strings.Contains(r.stderr, pw) || !strings.Contains(r.stderr, "-nats-password-file") {
		t.Fatalf("-h: exit %d, %q", r.code, r.stderr)
	}
	t.Setenv("HUB_NATS_PASSWORD", "wrong")
	line := failed(t, hubctl("device", "list"), 1)
	if !strings.Contains(line, "Authorization Violation") {
		t.Fatalf("wrong password: %q", line)
	}
	// The command line wins: a URL holding the user with HUB_NATS_USER
	// set is two ways to authenticate, a usage error.
	line = failed(t, hubctl("device", "list", "--nats-url", strings.Replace(withPW, pw, "not-it", 1)), 2)
	if strings.Contains(line, "not-it") || !strings.Contains(line, "give one way") {
		t.Fatalf("url and user: %q", line)
	}
}

// TestOperatorInbox: hubctl's replies come to the operators' inbox prefix,
// so it works for a user denied nats.go's default _INBOX.>.
func TestOperatorInbox(t *testing.T) {
	t.Parallel()
	port := natstest.FreePort(t)
	p := natstest.StartProc(t, port, fmt.Sprintf(`host: 127.0.0.1
port: %d
jetstream { store_dir: %q }
authorization { users = [ { user: ops, password: pw, permissions: { subscribe: { deny: "_INBOX.>" } } } ] }
`, port, filepath.Join(t.TempDir(), "js")))
	url := "nats://ops:pw@127.0.0.1:" + fmt.Sprint(p.Port)
	ok(t, hubctl("device", "add", "IN-1", "--type", "t", "--nats-url", url))
	if out := ok(t, hubctl("device", "list", "--nats-url", url)); out != "IN-1 t default\n" {
		t.Fatalf("device list: %q", out)
	}
}

// TestNATSFlagErrors: a bad connection flag is a usage error naming it,
// before any dial.
func TestNATSFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	akp, _ := nkeys.CreateAccount()
	aseed, _ := akp.Seed()
	acct := filepath.Join(dir, "acct.nk")
	if err := os.WriteFile(acct, aseed, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"device", "list", "--nats-nkey", acct}, "hubctl: device list: --nats-nkey " + acct + ": not a user nkey seed"},
		{[]string{"--nats-creds", missing, "device", "list"}, "hubctl: device list: --nats-creds " + missing + ": no such file"},
		{[]string{"device", "--nats-tls-cert", missing, "list"}, "hubctl: device list: --nats-tls-cert needs --nats-tls-key"},
		{[]string{"device", "add", "X-1", "--type", "t", "--nats-user", "u"}, "hubctl: device add: --nats-user needs"},
		{[]string{"online", "--nats-password-file", missing, "--nats-user", "u"}, "hubctl: online: --nats-password-file " + missing},
	} {
		args := append([]string{"--nats-url", unreachable}, tc.args...)
		if line := failed(t, hubctl(args...), 2); !strings.HasPrefix(line, tc.want) {
			t.Errorf("%q: %q, want %q", args, line, tc.want)
		}
	}
}

// TestDeviceKeySecretFile: device-key reads the master secret from a file,
// less its trailing newline, and refuses the file with --master-secret.
func TestDeviceKeySecretFile(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(auth.DeviceKey([]byte("s3cret"), "R-001")) + "\n"
	if got := ok(t, hubctl("device-key", "R-001", "--master-secret-file", f)); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if line := failed(t, hubctl("device-key", "R-001", "--master-secret-file", f, "--master-secret", "x"), 2); !strings.Contains(line, "--master-secret and --master-secret-file both given") {
		t.Fatalf("both: %q", line)
	}
	if line := failed(t, hubctl("device-key", "R-001", "--master-secret-file", f+".missing"), 2); !strings.Contains(line, "--master-secret-file "+f+".missing: no such file") {
		t.Fatalf("missing: %q", line)
	}
}
