package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
)

// tlsNode starts a node serving WSS with a certificate of ca, and returns
// it with its address.
func tlsNode(t *testing.T, ca *testpki.CA) (*hubtest.Node, string) {
	t.Helper()
	leaf := ca.Server(t, "hub")
	n := hubtest.StartNode(t, natstest.Run(t), "n1", hubtest.TLS(leaf.CertFile, leaf.KeyFile))
	return n, n.Serve(t)
}

func passwordFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkToken fails unless out is one line holding a token the node
// accepts for user.
func checkToken(t *testing.T, n *hubtest.Node, out, user string) {
	t.Helper()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("output %q: want the token on one line", out)
	}
	c, err := n.Hub.CheckToken(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("printed token refused: %v", err)
	}
	if c.User != user {
		t.Fatalf("token of %q, want %q", c.User, user)
	}
}

func TestLoginOverTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	n, addr := tlsNode(t, ca)
	pw := passwordFile(t, hubtest.AdminPassword+"\n")
	for _, u := range []string{"https://" + addr, "https://" + addr + "/", "wss://" + addr + "/ws", "https://" + addr + "/ws"} {
		t.Run(u, func(t *testing.T) {
			out := ok(t, hubctl("login", "--url", u, "--user", "admin", "--password-file", pw, "--tls-ca", ca.File))
			checkToken(t, n, out, "admin")
		})
	}
	t.Run("HUB_PASSWORD", func(t *testing.T) {
		t.Setenv("HUB_PASSWORD", hubtest.AdminPassword)
		t.Setenv("HUB_TLS_CA", ca.File)
		out := ok(t, hubctl("login", "--url", "wss://"+addr, "--user", "admin"))
		checkToken(t, n, out, "admin")
	})
}

func TestLoginPlain(t *testing.T) {
	n := hubtest.StartNode(t, natstest.Run(t), "n1")
	out := ok(t, hubctl("login", "--url", n.Server.URL, "--user", "admin", "--password", hubtest.AdminPassword))
	checkToken(t, n, out, "admin")
}

// TestLoginRefusals: each failure is one line on stderr and exit 1, with
// nothing on stdout; an untrusted certificate names x509 and --tls-ca.
func TestLoginRefusals(t *testing.T) {
	ca := testpki.NewCA(t)
	_, addr := tlsNode(t, ca)
	pw := passwordFile(t, hubtest.AdminPassword)
	other := testpki.NewCA(t)
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"no CA", []string{"--url", "https://" + addr, "--password-file", pw}, []string{"x509", "--tls-ca"}},
		{"another CA", []string{"--url", "https://" + addr, "--password-file", pw, "--tls-ca", other.File}, []string{"x509", "--tls-ca"}},
		{"wrong password", []string{"--url", "https://" + addr, "--password", "nope", "--tls-ca", ca.File}, []string{"401"}},
		{"plain to TLS", []string{"--url", "http://" + addr, "--password-file", pw}, []string{"ws://" + addr + "/ws"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := hubctl(append([]string{"login", "--user", "admin"}, c.args...)...)
			t.Logf("stderr: %s", r.stderr)
			if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("exit %d, stdout %q, stderr %q: want exit 1 and one line", r.code, r.stdout, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
		})
	}
}

func TestLoginUsage(t *testing.T) {
	pw := passwordFile(t, "pw")
	for _, args := range [][]string{
		{"login", "--password", "pw"},                                          // no --user
		{"login", "--user", "admin"},                                           // no password
		{"login", "--user", "admin", "--password-file", pw + ".none"},          // unreadable file
		{"login", "--user", "admin", "--password-file", passwordFile(t, "\n")}, // empty
		{"login", "--user", "admin", "--password", "pw", "--url", "nats://127.0.0.1:4222"},
		{"login", "--user", "admin", "--password", "pw", "--url", "127.0.0.1:8080"},
		{"login", "--user", "admin", "--password", "pw", "--tls-ca", pw}, // not PEM
		{"login", "--user", "admin", "--password", "pw", "extra"},
		{"login", "--user", "a.b", "--password", "pw"},
	} {
		r := hubctl(args...)
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q: want 2 and one line", args, r.code, r.stderr)
		}
	}
}
