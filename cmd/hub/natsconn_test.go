package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/loadtest"
	"github.com/fleethub/fleethub/internal/natsconn/authtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nkeys"
)

// hubExit runs the hub binary with args until it exits (at most 30 s)
// and returns its exit code and standard error.
func hubExit(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--listen", freeAddr(t), "--log-level", "warn"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("hub %q: %v (want a non-zero exit)\n%s", args, err, stderr.String())
	}
	return ee.ExitCode(), stderr.String()
}

func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNATSConn runs the node process against nats-server processes that
// demand a password, an nkey, creds or a client certificate: with the
// right --nats-* flags (and the secrets from files) it serves; with the
// wrong ones or none it keeps retrying, not ready, and warns with the
// reason.
func TestNATSConn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs node and nats-server processes; skipped with -short")
	}
	bin, err := loadtest.BuildHub(t.TempDir())
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	secretFile := writeSecret(t, "master-secret", string(hubtest.MasterSecret)+"\n")
	adminPW := "admin-" + fmt.Sprint(time.Now().UnixNano())
	adminFile := writeSecret(t, "admin-password", adminPW+"\n")

	servers := authtest.All(t)
	pwServer := servers[0]
	withPW := authtest.PasswordURL(t, pwServer)
	pw, _, _ := strings.Cut(strings.TrimPrefix(withPW, "nats://hub:"), "@")
	type run struct {
		name  string
		flags []string
		env   map[string]string
	}
	var runs []run
	for _, s := range servers {
		runs = append(runs, run{s.Name, s.Flags, nil})
	}
	runs = append(runs, run{"password-in-url", []string{"--nats-url", withPW}, nil},
		run{"password-env", nil, map[string]string{"HUB_NATS_URL": pwServer.URL, "HUB_NATS_USER": "hub", "HUB_NATS_PASSWORD": pw}})
	// A user denied nats.go's default inbox: the node's replies come to
	// its own prefix, so it still serves.
	port := natstest.FreePort(t)
	inboxProc := natstest.StartProc(t, port, fmt.Sprintf(`host: 127.0.0.1
port: %d
jetstream { store_dir: %q }
authorization { users = [ { user: node, password: pw, permissions: { subscribe: { deny: "_INBOX.>" } } } ] }
`, port, filepath.Join(t.TempDir(), "js")))
	runs = append(runs, run{"node-inbox", []string{"--nats-url", "nats://127.0.0.1:" + fmt.Sprint(inboxProc.Port), "--nats-user", "node", "--nats-password", "pw"}, nil})

	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			for k, v := range r.env {
				t.Setenv(k, v) // the child inherits the environment
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			h, err := loadtest.StartHub(ctx, bin, append(r.flags, "--dev=false", "--node-id", "nc-"+r.name,
				"--master-secret-file", secretFile, "--admin-password-file", adminFile, "--log-level", "info")...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = h.Stop() }()
			natstest.Eventually(t, 15*time.Second, func() error {
				resp, err := http.Get(h.HTTPURL + "/readyz")
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("/readyz %d", resp.StatusCode)
				}
				return nil
			})
			// The device key derives from the secret in the file, less
			// its newline; the admin's password is the file's.
			d := hubtest.Dial(t, h.WSURL, nil)
			d.MustOK("/auth/device", hubtest.DeviceArgs("NC-1", "retail"))
			a := hubtest.Dial(t, h.WSURL, nil)
			a.MustOK("/auth/login", map[string]any{"username": "admin", "password": adminPW})
			// The node logs where it connects, with the URL's user part
			// redacted. (Stop removes the log, so read it first.)
			log := h.LogTail(1 << 20)
			if !strings.Contains(log, `msg="connecting to NATS"`) || strings.Contains(log, pw) {
				t.Fatalf("want the connect line, without the NATS password, in the node's log:\n%s", log)
			}
			if err := h.Stop(); err != nil {
				t.Fatalf("stop: %v\n%s", err, log)
			}
		})
	}

	t.Run("password-rotation", func(t *testing.T) { testRotation(t, bin, secretFile) })

	// Refused: with wrong or missing credentials the node does not exit:
	// it serves /livez, answers /readyz 503 naming nats, and keeps
	// retrying, with a warning that gives the server's reason (at a
	// bounded rate: credentials being rotated are refused for a while).
	for _, s := range servers {
		for name, flags := range map[string][]string{"bad": s.Bad, "none": {"--nats-url", s.URL}} {
			reason := s.BadError
			if name == "none" {
				reason = "" // the server's own words differ by kind
			}
			t.Run(s.Name+"-"+name, func(t *testing.T) {
				h, err := loadtest.LaunchHub(bin, append(flags, "--dev=false", "--master-secret-file", secretFile, "--log-level", "info")...)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = h.Stop() }()
				natstest.Eventually(t, 15*time.Second, func() error {
					if exited, err := h.Exited(); exited {
						t.Fatalf("node exited (%v) on refused credentials:\n%s", err, h.LogTail(8192))
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					code, body, err := h.Probe(ctx, "/readyz")
					if err != nil {
						return err
					}
					if m := fmt.Sprint(body["missing"]); code != http.StatusServiceUnavailable || !strings.Contains(m, "nats") {
						return fmt.Errorf("/readyz %d %s, want 503 naming nats", code, m)
					}
					for _, l := range strings.Split(h.LogTail(1<<20), "\n") {
						if strings.Contains(l, "level=WARN") && strings.Contains(l, "NATS not reachable yet") && strings.Contains(l, reason) {
							return nil
						}
					}
					return fmt.Errorf("no warning with %q in the log:\n%s", reason, h.LogTail(8192))
				})
			})
		}
	}

	// Refused before any dial: exit 2 with one line naming the flag.
	akp, _ := nkeys.CreateAccount()
	aseed, _ := akp.Seed()
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--master-secret", "s", "--master-secret-file", secretFile}, "hub: --master-secret and --master-secret-file both given"},
		{[]string{"--master-secret-file", missing}, "hub: --master-secret-file " + missing + ": no such file or directory"},
		{[]string{"--master-secret-file", writeSecret(t, "empty", "\n")}, "hub: --master-secret-file"},
		{[]string{"--master-secret", "s", "--admin-password", "p", "--admin-password-file", adminFile}, "hub: --admin-password and --admin-password-file both given"},
		{[]string{"--master-secret", "s", "--admin-password-file", missing}, "hub: --admin-password-file " + missing},
		{[]string{"--master-secret", "s", "--nats-url", pwServer.URL, "--nats-nkey", writeSecret(t, "acct.nk", string(aseed))}, "hub: --nats-nkey"},
		{[]string{"--master-secret", "s", "--nats-url", pwServer.URL, "--nats-user", "hub"}, "hub: --nats-user needs"},
	} {
		code, stderr := hubExit(t, bin, tc.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("hub %q: exit %d, stderr %q; want 2 and one line starting %q", tc.args, code, stderr, tc.want)
		}
	}
}

// readyz polls /readyz until it answers want.
func readyz(t *testing.T, base string, want int, timeout time.Duration) {
	t.Helper()
	natstest.Eventually(t, timeout, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("/readyz %d, want %d", resp.StatusCode, want)
		}
		return nil
	})
}

// testRotation: the NATS password is changed on the server first (which
// drops the node and refuses its reconnects), then in the node's
// --nats-password-file: the node keeps retrying, reads the file again and
// is ready again, with no restart.
func testRotation(t *testing.T, bin, secretFile string) {
	port := natstest.FreePort(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "nats.pid")
	conf := func(pw string) string {
		return fmt.Sprintf("host: 127.0.0.1\nport: %d\npid_file: %q\njetstream { store_dir: %q }\nauthorization { users = [ { user: hub, password: %q } ] }\n",
			port, pidFile, filepath.Join(dir, "js"), pw)
	}
	p := natstest.StartProc(t, port, conf("first-password"))
	pwFile := writeSecret(t, "nats-password", "first-password\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := loadtest.StartHub(ctx, bin, "--nats-url", p.URL(), "--nats-user", "hub", "--nats-password-file", pwFile,
		"--dev=false", "--master-secret-file", secretFile, "--node-id", "nc-rotation")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Stop() }()
	readyz(t, h.HTTPURL, http.StatusOK, 15*time.Second)

	// The server first: it closes the node's connection and refuses the
	// old password from then on.
	if err := os.WriteFile(p.Conf, []byte(conf("second-password")), 0o600); err != nil {
		t.Fatal(err)
	}
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	refusals := strings.Count(p.Log(), "authentication error")
	if out, err := exec.Command("kill", "-HUP", strings.TrimSpace(string(pid))).CombinedOutput(); err != nil {
		t.Fatalf("reload nats-server: %v %s", err, out)
	}
	readyz(t, h.HTTPURL, http.StatusServiceUnavailable, 15*time.Second)
	// Refused more than twice: nats.go's default would have given up.
	natstest.Eventually(t, 15*time.Second, func() error {
		if n := strings.Count(p.Log(), "authentication error") - refusals; n < 3 {
			return fmt.Errorf("%d refused reconnects", n)
		}
		return nil
	})
	if exited, _ := h.Exited(); exited {
		t.Fatal("the node exited")
	}
	// Then the node's file.
	if err := os.WriteFile(pwFile, []byte("second-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	readyz(t, h.HTTPURL, http.StatusOK, 15*time.Second)
	d := hubtest.Dial(t, h.WSURL, nil)
	d.MustOK("/auth/device", hubtest.DeviceArgs("NC-ROT", "retail"))
}
