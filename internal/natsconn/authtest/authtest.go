// Package authtest runs nats-server processes (the pinned build, through
// internal/natstest) that demand credentials: user and password, an nkey,
// a creds file in operator mode, or TLS with a client certificate. Each
// comes with the --nats-* flags that get in and flags that do not, so the
// tests of hub, hubctl and devsim try the same servers.
package authtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Server is a running nats-server that authenticates its clients.
type Server struct {
	// Name says how it authenticates: "password", "nkey", "creds", "tls".
	Name string
	Proc *natstest.Proc
	// URL is the client URL, without credentials.
	URL string
	// Flags are the --nats-* flags, --nats-url included, that connect.
	Flags []string
	// Bad are flags, --nats-url included, that the server refuses (no or
	// wrong credentials), and BadError is a part of the error nats.go
	// reports for them.
	Bad      []string
	BadError string
	// Options connect a nats.go client with the same identity, for a
	// test to look at the buckets.
	Options []nats.Option
}

// Connect opens a nats.go connection with the server's good identity and
// closes it when the test ends.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL, append([]nats.Option{nats.Timeout(5 * time.Second)}, s.Options...)...)
	if err != nil {
		t.Fatalf("connect to %s server: %v", s.Name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// All starts one server of each kind.
func All(t testing.TB) []*Server {
	t.Helper()
	return []*Server{Password(t), Nkey(t), Creds(t), TLS(t)}
}

func jetStream(t testing.TB) string {
	return fmt.Sprintf("jetstream { store_dir: %q }\n", filepath.Join(t.TempDir(), "js"))
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func randomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Password is a server with one user, "hub", and a random password, which
// the config takes from the environment ($HUB_TEST_PW). Flags give it
// through --nats-password-file (with a trailing newline, as `echo` writes).
func Password(t testing.TB) *Server {
	t.Helper()
	pw := randomHex(t)
	port := natstest.FreePort(t)
	conf := fmt.Sprintf("host: 127.0.0.1\nport: %d\n%sauthorization { users = [ { user: hub, password: $HUB_TEST_PW } ] }\n", port, jetStream(t))
	p := natstest.StartProc(t, port, conf, "HUB_TEST_PW="+pw)
	pwFile := writeFile(t, "nats-password", []byte(pw+"\n"))
	return &Server{
		Name: "password", Proc: p, URL: p.URL(),
		Flags:    []string{"--nats-url", p.URL(), "--nats-user", "hub", "--nats-password-file", pwFile},
		Bad:      []string{"--nats-url", p.URL(), "--nats-user", "hub", "--nats-password", "wrong-" + pw},
		BadError: "Authorization Violation",
		Options:  []nats.Option{nats.UserInfo("hub", pw)},
	}
}

// PasswordURL returns the user and password of a Password server, for a
// URL holding them.
func PasswordURL(t testing.TB, s *Server) string {
	t.Helper()
	var user, pw string
	for i := 0; i+1 < len(s.Flags); i++ {
		switch s.Flags[i] {
		case "--nats-user":
			user = s.Flags[i+1]
		case "--nats-password-file":
			b, err := os.ReadFile(s.Flags[i+1])
			if err != nil {
				t.Fatal(err)
			}
			pw = string(b[:len(b)-1])
		}
	}
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, pw, s.Proc.Port)
}

// Nkey is a server that knows one user nkey; its seed is in a file of one
// line.
func Nkey(t testing.TB) *Server {
	t.Helper()
	_, seed, pub := userKey(t)
	port := natstest.FreePort(t)
	conf := fmt.Sprintf("host: 127.0.0.1\nport: %d\n%sauthorization { users = [ { nkey: %s } ] }\n", port, jetStream(t), pub)
	p := natstest.StartProc(t, port, conf)
	seedFile := writeFile(t, "user.nk", append(seed, '\n'))
	_, otherSeed, _ := userKey(t)
	otherFile := writeFile(t, "other.nk", append(otherSeed, '\n'))
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{
		Name: "nkey", Proc: p, URL: p.URL(),
		Flags:    []string{"--nats-url", p.URL(), "--nats-nkey", seedFile},
		Bad:      []string{"--nats-url", p.URL(), "--nats-nkey", otherFile},
		BadError: "Authorization Violation",
		Options:  []nats.Option{opt},
	}
}

func userKey(t testing.TB) (nkeys.KeyPair, []byte, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, seed, pub
}

// Creds is a server in operator mode: an operator, a system account and
// an account with JetStream, all made now and preloaded in a MEMORY
// resolver, and a user of that account in a creds file. Bad is a user
// signed by an account the operator never issued.
func Creds(t testing.TB) *Server {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "fleethub-test"
	sysKP, sysJWT := account(t, okp, "SYS", false)
	sysPub, _ := sysKP.PublicKey()
	oc.SystemAccount = sysPub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	akp, ajwt := account(t, okp, "HUB", true)
	apub, _ := akp.PublicKey()

	port := natstest.FreePort(t)
	conf := fmt.Sprintf("host: 127.0.0.1\nport: %d\n%soperator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %s\n  %s: %s\n}\n",
		port, jetStream(t), ojwt, sysPub, sysPub, sysJWT, apub, ajwt)
	p := natstest.StartProc(t, port, conf)

	good := writeFile(t, "hub.creds", userCreds(t, akp, "hub"))
	// A user of an account that exists nowhere on the server.
	otherOp, _ := nkeys.CreateOperator()
	stranger, _ := account(t, otherOp, "STRANGER", true)
	bad := writeFile(t, "stranger.creds", userCreds(t, stranger, "stranger"))
	return &Server{
		Name: "creds", Proc: p, URL: p.URL(),
		Flags:    []string{"--nats-url", p.URL(), "--nats-creds", good},
		Bad:      []string{"--nats-url", p.URL(), "--nats-creds", bad},
		BadError: "Authorization Violation",
		Options:  []nats.Option{nats.UserCredentials(good)},
	}
}

// account makes an account key and its JWT signed by the operator; with
// js, the account may use JetStream without limits.
func account(t testing.TB, okp nkeys.KeyPair, name string, js bool) (nkeys.KeyPair, string) {
	t.Helper()
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = name
	if js {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	}
	token, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	return akp, token
}

// userCreds makes a user of the account and returns its creds file.
func userCreds(t testing.TB, akp nkeys.KeyPair, name string) []byte {
	t.Helper()
	_, seed, upub := userKey(t)
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	token, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// TLS is a server that serves TLS only, with a certificate of a test CA,
// and verifies a client certificate of that CA (verify: true). Bad trusts
// the CA but presents no client certificate.
func TLS(t testing.TB) *Server {
	t.Helper()
	ca := testpki.NewCA(t)
	srv := ca.Server(t, "nats")
	cli := ca.Client(t, "hub")
	port := natstest.FreePort(t)
	conf := fmt.Sprintf("host: 127.0.0.1\nport: %d\n%stls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n  timeout: 5\n}\n",
		port, jetStream(t), srv.CertFile, srv.KeyFile, ca.File)
	p := natstest.StartProc(t, port, conf)
	return &Server{
		Name: "tls", Proc: p, URL: p.URL(),
		Flags:    []string{"--nats-url", p.URL(), "--nats-tls-ca", ca.File, "--nats-tls-cert", cli.CertFile, "--nats-tls-key", cli.KeyFile},
		Bad:      []string{"--nats-url", p.URL(), "--nats-tls-ca", ca.File},
		BadError: "tls", // "certificate required", or the connection closed after the handshake
		Options:  []nats.Option{nats.RootCAs(ca.File), nats.ClientCert(cli.CertFile, cli.KeyFile)},
	}
}
