package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	hubclient "github.com/fleethub/fleethub/client"
)

// defaultNodeURL is the node's own default --listen, as a base URL.
const defaultNodeURL = "http://127.0.0.1:8080"

// loginCommand logs in to a node over its WebSocket with the Go SDK's
// admin login and prints the token on one line, for scripts that then
// authenticate with it (/auth/token, the SDK's Config.Token). Unlike the
// other commands it talks to a node, not to NATS. The password is never
// needed on the command line: a file or HUB_PASSWORD does.
var loginCommand = &command{
	name:     "login",
	synopsis: "--user NAME [--url URL] [--password-file F | HUB_PASSWORD] [--tls-ca FILE]",
	setup: func(fs *flag.FlagSet) func([]string) (*job, error) {
		rawURL := fs.String("url", defaultNodeURL, "the node: ws://, wss://, http:// or https://HOST:PORT, its base or /ws")
		user := fs.String("user", "", "the user to log in as (required)")
		password := fs.String("password", "", "the password (HUB_PASSWORD); prefer --password-file or HUB_PASSWORD to keep it off the command line")
		passwordFile := fs.String("password-file", "", "a file holding the password (a trailing newline is not part of it); wins over --password")
		caFile := fs.String("tls-ca", "", "PEM file of the CA to trust for a wss:// or https:// node (instead of the system's roots)")
		return func(args []string) (*job, error) {
			if err := wantArgs(args); err != nil {
				return nil, err
			}
			if err := checkUsername(*user); err != nil {
				if *user == "" {
					return nil, errors.New("--user is required")
				}
				return nil, fmt.Errorf("--user: %w", err)
			}
			wsURL, err := loginURL(*rawURL)
			if err != nil {
				return nil, err
			}
			pw := *password
			if *passwordFile != "" {
				if pw, err = readPasswordFile(*passwordFile); err != nil {
					return nil, err
				}
			}
			if pw == "" {
				return nil, errors.New("a password is required: --password-file F or HUB_PASSWORD (or --password)")
			}
			var tlsConfig *tls.Config
			if *caFile != "" {
				pool, err := hubclient.LoadCAFile(*caFile)
				if err != nil {
					return nil, fmt.Errorf("--tls-ca: %w", err)
				}
				tlsConfig = &tls.Config{RootCAs: pool}
			}
			return &job{run: func(ctx context.Context, c *client) error {
				token, err := adminLogin(ctx, wsURL, *user, pw, tlsConfig)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(c.out, token)
				return err
			}}, nil
		}
	},
}

// loginURL turns what --url may be (ws, wss, http or https; the node's
// base or its /ws) into the WebSocket URL. A base with a path (a node
// behind a proxy under a prefix) gets /ws appended.
func loginURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("--url %q: want ws://, wss://, http:// or https://HOST:PORT, optionally with /ws", raw)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("--url %q: scheme must be ws, wss, http or https", raw)
	}
	if !strings.HasSuffix(u.Path, "/ws") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// readPasswordFile reads a password file; one trailing newline (as an
// editor or echo leaves) is not part of the password.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--password-file: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("--password-file %s: the file is empty", path)
	}
	return pw, nil
}

// adminLogin logs in over the WebSocket with the SDK and returns the
// token of the session, which it then closes.
func adminLogin(ctx context.Context, wsURL, user, password string, tlsConfig *tls.Config) (string, error) {
	c, err := hubclient.Dial(ctx, hubclient.Config{
		URL:       wsURL,
		Login:     &hubclient.LoginAuth{Username: user, Password: password},
		TLSConfig: tlsConfig,
	})
	if err != nil {
		if certificateError(err) {
			return "", fmt.Errorf("login to %s: %w (trust the node's CA with --tls-ca)", wsURL, err)
		}
		return "", fmt.Errorf("login to %s as %s: %w", wsURL, user, err)
	}
	token := c.Session().Token
	_ = c.Close()
	if token == "" {
		return "", fmt.Errorf("login to %s as %s: the node answered without a token", wsURL, user)
	}
	return token, nil
}

// certificateError reports whether err is a failed verification of the
// server's certificate.
func certificateError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}
