// Package natsconn holds the --nats-* connection flags that hub, hubctl and
// devsim share: the NATS URL, credentials (a creds file, an nkey seed, or a
// user and password) and TLS to NATS (a CA to trust, a client certificate).
// It turns them into nats.go options and checks them before any dial, so a
// missing file or a wrong kind of key is one line naming the flag, not a
// connection that fails later with the server's words.
//
//	var conn natsconn.Config
//	conn.Register(fs, "nats://127.0.0.1:4222")
//	// parse fs ...
//	opts, err := conn.Options()
//	if err != nil { ... } // "--nats-nkey seed.txt: not a user nkey seed (SU...): account seed"
//	nc, err := nats.Connect(conn.URL, append(opts, natsconn.InboxPrefix(schema.OperatorInboxPrefix))...)
//
// Secrets never need the command line: every flag also comes from its
// HUB_* variable (HUB_NATS_PASSWORD), the password from
// --nats-password-file, and creds, seeds and keys are files.
package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/internal/cli"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Config is the NATS connection a command makes, as its flags give it.
type Config struct {
	// URL is the NATS servers to join, comma-separated. A user and
	// password (or a token) in it are used, and redacted in messages.
	URL string
	// Creds is a NATS credentials file: a user JWT and its nkey seed.
	Creds string
	// NkeyFile holds an nkey user seed (SU...), on one line.
	NkeyFile string
	// User and Password authenticate with a user name and password.
	User, Password string
	// PasswordFile holds the password instead of Password.
	PasswordFile string
	// TLSCA is a PEM file of the CA (or CAs) to trust for the server's
	// certificate, instead of the system's.
	TLSCA string
	// TLSCert and TLSKey are the PEM client certificate and key, for a
	// server that verifies clients (verify: true).
	TLSCert, TLSKey string
	// Inbox is the connection's inbox prefix, for a tool whose role
	// decides it (hubctl: RegisterInbox).
	Inbox string
	// JSDomain is the JetStream domain to use (RegisterJSDomain), for a
	// tool that reaches the hub's stores in a leaf-node site.
	JSDomain string
}

// RegisterJSDomain adds --js-domain: the JetStream domain of the hub's
// buckets and streams.
func (c *Config) RegisterJSDomain(fs *flag.FlagSet) {
	fs.StringVar(&c.JSDomain, "js-domain", "", "the JetStream domain of the hub's buckets and streams (leaf-node sites); empty for the connection's own")
}

// RegisterInbox adds --nats-inbox-prefix with def as its default: the
// prefix of the connection's reply subjects, which the NATS permissions
// of the credentials must let it subscribe to.
func (c *Config) RegisterInbox(fs *flag.FlagSet, def string) {
	fs.StringVar(&c.Inbox, "nats-inbox-prefix", def, "inbox prefix of the connection's replies ("+def+" for operator credentials, _INBOX for a backend's)")
}

// Register adds the flags to fs, with defaultURL as --nats-url's default.
// The values land in c. A caller with a more specific --nats-url text
// (hub: empty means embedded) sets fs.Lookup("nats-url").Usage after.
func (c *Config) Register(fs *flag.FlagSet, defaultURL string) {
	fs.StringVar(&c.URL, "nats-url", defaultURL, "NATS servers to join, comma-separated; nats://user:password@host:port is accepted")
	fs.StringVar(&c.Creds, "nats-creds", "", "NATS credentials file (user JWT and nkey seed) for the connection")
	fs.StringVar(&c.NkeyFile, "nats-nkey", "", "file holding an nkey user seed (SU..., one line) for the connection")
	fs.StringVar(&c.User, "nats-user", "", "NATS user name (with --nats-password or --nats-password-file)")
	fs.StringVar(&c.Password, "nats-password", "", "NATS password; prefer "+cli.EnvName("nats-password")+" or --nats-password-file, which stay out of the process list")
	fs.StringVar(&c.PasswordFile, "nats-password-file", "", "file holding the NATS password (a trailing newline is not part of it)")
	fs.StringVar(&c.TLSCA, "nats-tls-ca", "", "PEM file of the CA to trust for the NATS server's certificate (implies TLS)")
	fs.StringVar(&c.TLSCert, "nats-tls-cert", "", "PEM client certificate for NATS, with --nats-tls-key (implies TLS)")
	fs.StringVar(&c.TLSKey, "nats-tls-key", "", "PEM key of --nats-tls-cert")
}

// InboxPrefix is the option giving a connection its own inbox prefix
// (schema.NodeInboxPrefix for nodes, schema.OperatorInboxPrefix for
// hubctl), so that permissions can keep replies to nodes and operators
// away from a backend allowed nats.go's default _INBOX.>.
func InboxPrefix(prefix string) nats.Option { return nats.CustomInboxPrefix(prefix) }

// Options checks the flags and returns the nats.go options they make:
// credentials and TLS. The URL itself goes to nats.Connect. Every file is
// read now, so that an error names its flag; the creds, seed, password,
// CA and certificate files are read again at each (re)connect, so a
// renewed file takes effect without a restart.
func (c *Config) Options() ([]nats.Option, error) {
	opts, err := c.AuthOptions()
	if err != nil {
		return nil, err
	}
	tlsOpts, err := c.tlsOptions()
	if err != nil {
		return nil, err
	}
	return append(opts, tlsOpts...), nil
}

// AuthOptions is the credentials part of Options alone (none when no
// credential flag is set): what an in-process connection to an embedded
// server presents, where TLS has no place.
func (c *Config) AuthOptions() ([]nats.Option, error) {
	var opts []nats.Option
	auth, err := c.authMethods()
	if err != nil {
		return nil, err
	}
	if len(auth) > 1 {
		return nil, fmt.Errorf("%s: give one way to authenticate to NATS", strings.Join(auth, " and "))
	}
	switch {
	case c.Creds != "":
		if err := checkCreds(c.Creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NkeyFile != "":
		pub, err := seedPublicKey(c.NkeyFile)
		if err != nil {
			return nil, err
		}
		file := c.NkeyFile
		opts = append(opts, nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return signWithSeed(file, nonce) }))
	case c.User != "" || c.Password != "" || c.PasswordFile != "":
		pw, err := cli.SecretFromFile("nats-password", c.Password, "nats-password-file", c.PasswordFile)
		if err != nil {
			return nil, err
		}
		if c.User == "" {
			if c.PasswordFile != "" {
				return nil, errors.New("--nats-password-file needs --nats-user")
			}
			return nil, errors.New("--nats-password needs --nats-user")
		}
		if pw == "" {
			return nil, fmt.Errorf("--nats-user needs --nats-password-file, %s or --nats-password", cli.EnvName("nats-password"))
		}
		if c.PasswordFile == "" {
			opts = append(opts, nats.UserInfo(c.User, pw))
			break
		}
		opts = append(opts, nats.UserInfoHandler(passwordFromFile(c.User, c.PasswordFile, pw)))
	}
	return opts, nil
}

// passwordFromFile is the user and password of each connect and
// reconnect, the password read again from its file, so that a rotated
// password takes effect at the next reconnect. A file that cannot be read
// at that moment (being replaced) leaves the last password in use.
func passwordFromFile(user, path, first string) nats.UserInfoCB {
	var mu sync.Mutex
	last := first
	return func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		if pw, err := cli.ReadSecretFile("nats-password-file", path); err == nil {
			last = pw
		}
		return user, last
	}
}

// authMethods names the ways of authenticating the flags and URL give.
func (c *Config) authMethods() ([]string, error) {
	var auth []string
	if c.Creds != "" {
		auth = append(auth, "--nats-creds")
	}
	if c.NkeyFile != "" {
		auth = append(auth, "--nats-nkey")
	}
	if c.User != "" || c.Password != "" || c.PasswordFile != "" {
		auth = append(auth, "--nats-user")
	}
	for _, u := range strings.Split(c.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			continue // host:port, which nats.go accepts, holds no user
		}
		p, err := url.Parse(u)
		if err != nil {
			// url's message quotes the URL, which may hold a password.
			return nil, fmt.Errorf("--nats-url %s: not a valid URL", Redact(u))
		}
		if p.User != nil {
			auth = append(auth, "a user in --nats-url")
			break
		}
	}
	return auth, nil
}

func (c *Config) tlsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		return nil, errors.New("--nats-tls-cert needs --nats-tls-key")
	case c.TLSKey != "" && c.TLSCert == "":
		return nil, errors.New("--nats-tls-key needs --nats-tls-cert")
	}
	if c.TLSCA != "" {
		b, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fileError("nats-tls-ca", c.TLSCA, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--nats-tls-ca %s: no PEM certificate in the file", c.TLSCA)
		}
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return nil, fmt.Errorf("--nats-tls-cert %s, --nats-tls-key %s: %w", c.TLSCert, c.TLSKey, unwrapPath(err))
		}
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	if len(opts) > 0 {
		// Never fall back to plain text when a CA or a client
		// certificate was asked for.
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}

// TLS reports whether the flags ask for TLS to NATS.
func (c *Config) TLS() bool {
	if c.TLSCA != "" || c.TLSCert != "" {
		return true
	}
	for _, u := range strings.Split(c.URL, ",") {
		if s := strings.TrimSpace(u); strings.HasPrefix(s, "tls://") || strings.HasPrefix(s, "wss://") {
			return true
		}
	}
	return false
}

// Auth names the way the connection authenticates, for a log line:
// "creds", "nkey", "user", "url" or "none".
func (c *Config) Auth() string {
	switch m, _ := c.authMethods(); {
	case len(m) == 0:
		return "none"
	case c.Creds != "":
		return "creds"
	case c.NkeyFile != "":
		return "nkey"
	case c.User != "" || c.Password != "" || c.PasswordFile != "":
		return "user"
	default:
		return "url"
	}
}

// checkCreds reads a credentials file and checks that it holds a user
// JWT, not expired, and the user nkey seed it was issued to.
func checkCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fileError("nats-creds", path, err)
	}
	defer wipe(b)
	token, err := nkeys.ParseDecoratedJWT(b)
	if err != nil {
		return fmt.Errorf("--nats-creds %s: no user JWT: %w", path, err)
	}
	claims, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return fmt.Errorf("--nats-creds %s: not a NATS credentials file (no valid user JWT)", path)
	}
	if claims.Expires != 0 && time.Unix(claims.Expires, 0).Before(time.Now()) {
		return fmt.Errorf("--nats-creds %s: the user JWT expired at %s", path, time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339))
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return fmt.Errorf("--nats-creds %s: no user nkey seed: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("--nats-creds %s: %w", path, err)
	}
	if pub != claims.Subject {
		return fmt.Errorf("--nats-creds %s: the seed is not the key the JWT was issued to", path)
	}
	return nil
}

// readSeed reads an nkey seed file: one line, a trailing line break
// ignored, holding a user seed.
func readSeed(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fileError("nats-nkey", path, err)
	}
	defer wipe(b)
	seed := []byte(strings.TrimRight(string(b), "\r\n"))
	defer wipe(seed)
	if len(seed) == 0 {
		return nil, fmt.Errorf("--nats-nkey %s: the file is empty", path)
	}
	if strings.ContainsAny(string(seed), "\r\n") {
		return nil, fmt.Errorf("--nats-nkey %s: want one line holding the seed (for a creds file use --nats-creds)", path)
	}
	prefix, _, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("--nats-nkey %s: not an nkey seed", path)
	}
	if prefix != nkeys.PrefixByteUser {
		return nil, fmt.Errorf("--nats-nkey %s: not a user nkey seed (SU...): %s seed", path, prefix)
	}
	return nkeys.FromSeed(seed)
}

func seedPublicKey(path string) (string, error) {
	kp, err := readSeed(path)
	if err != nil {
		return "", err
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

// signWithSeed signs the server's nonce, reading the seed again, as
// nats.go does for its own seed files: the key is not kept in memory
// between connects, and a replaced file takes effect at the next one.
func signWithSeed(path string, nonce []byte) ([]byte, error) {
	kp, err := readSeed(path)
	if err != nil {
		return nil, err
	}
	defer kp.Wipe()
	return kp.Sign(nonce)
}

// Redact hides the credentials of a (comma-separated) NATS URL, for logs
// and error messages. The whole user part goes, since with token
// authentication the user name is the secret.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		s := strings.TrimSpace(p)
		scheme, rest, ok := strings.Cut(s, "://")
		if !ok {
			continue
		}
		// Cut by hand, not with url.Parse: a malformed URL (a password
		// with an unescaped / or @) must lose its password too. A NATS
		// URL has no path that could hold an @.
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			parts[i] = scheme + "://REDACTED@" + rest[at+1:]
		}
	}
	return strings.Join(parts, ",")
}

func fileError(flag, path string, err error) error {
	return fmt.Errorf("--%s %s: %w", flag, path, unwrapPath(err))
}

// unwrapPath drops the *os.PathError wrapping, whose text repeats the
// path the message names already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}
