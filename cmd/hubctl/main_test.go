package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"
)

// unreachable is a NATS URL nothing listens on: a usage error must be
// reported before any connection is tried, and with this URL a command
// that connected anyway would exit 1, not 2.
const unreachable = "nats://127.0.0.1:1"

// propagation is the contract's bound on how fast registry and user
// changes reach running nodes.
const propagation = time.Second

func TestMain(m *testing.M) {
	// The nodes check passwords at the cost they were hashed with; the
	// minimum keeps logins fast under the race detector on small machines.
	passwordCost = bcrypt.MinCost
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

func hubctl(args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// start runs hubctl in the background, for commands that need the test to
// act (answer as the device) while they wait.
func start(args ...string) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- hubctl(args...) }()
	return ch
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("hubctl did not return")
		return result{}
	}
}

// ok fails the test unless r succeeded silently on stderr, and returns
// its stdout.
func ok(t *testing.T, r result) string {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// failed checks a failure: the exit code, nothing on stdout and exactly one
// line on stderr, which is returned without its newline.
func failed(t *testing.T, r result, code int) string {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if r.stdout != "" {
		t.Fatalf("stdout %q on failure", r.stdout)
	}
	line, found := strings.CutSuffix(r.stderr, "\n")
	if !found || line == "" || strings.Contains(line, "\n") {
		t.Fatalf("stderr %q is not exactly one line", r.stderr)
	}
	return line
}

// waitInterest waits until the NATS server routes each subject to a
// subscriber. A node subscribes a session's subjects without waiting for
// the server, so its auth answer can come first; a publisher on another
// connection must wait for this.
func waitInterest(t *testing.T, ns *server.Server, subjs ...string) {
	t.Helper()
	acc := ns.GlobalAccount()
	natstest.Eventually(t, 5*time.Second, func() error {
		for _, s := range subjs {
			if !acc.SubscriptionInterest(s) {
				return fmt.Errorf("no interest in %s", s)
			}
		}
		return nil
	})
}

func subject(t *testing.T, f func(string) (string, error), token string) string {
	t.Helper()
	s, err := f(token)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// loginCode tries /auth/login on a fresh connection and returns the code,
// without failing the test, for use inside Eventually.
func loginCode(t *testing.T, n *hubtest.Node, user, password string) int {
	c := hubtest.Dial(t, n.WSURL(), nil)
	defer func() { _ = c.Conn.Close() }()
	return c.Request("/auth/login", map[string]any{"username": user, "password": password}).Code
}

// login logs in on a new connection and returns it with its token.
func login(t *testing.T, n *hubtest.Node, user, password string) (*hubtest.Client, string) {
	t.Helper()
	c := hubtest.Dial(t, n.WSURL(), nil)
	m := c.MustOK("/auth/login", map[string]any{"username": user, "password": password})
	var v struct{ Token string }
	m.Decode(t, &v)
	return c, v.Token
}

// mintToken issues a token as a test node would, from its master secret,
// for the version gen of the account (its UpdatedAt).
func mintToken(t *testing.T, user string, role auth.Role, groups []string, gen int64) string {
	t.Helper()
	tokens, err := auth.NewTokens(auth.TokenConfig{Key: auth.TokenKey(hubtest.MasterSecret), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := tokens.Issue(user, role, groups, gen)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// tokenCode tries /auth/token on a fresh connection and returns the code.
func tokenCode(t *testing.T, n *hubtest.Node, token string) int {
	c := hubtest.Dial(t, n.WSURL(), nil)
	defer func() { _ = c.Conn.Close() }()
	return c.Request("/auth/token", map[string]any{"token": token}).Code
}

// deviceAuth tries /auth/device on a fresh connection and returns the
// response, without failing the test.
func deviceAuth(t *testing.T, n *hubtest.Node, sn, typ string) hubtest.Msg {
	c := hubtest.Dial(t, n.WSURL(), nil)
	defer func() { _ = c.Conn.Close() }()
	return c.Request("/auth/device", hubtest.DeviceArgs(sn, typ))
}

func readKV[T any](t *testing.T, ns *server.Server, bucket, key string) T {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("%s/%s: %v", bucket, key, err)
	}
	var v T
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDeviceKey(t *testing.T) {
	t.Parallel()
	want := hex.EncodeToString(auth.DeviceKey([]byte("s3cret"), "R-001")) + "\n"
	for _, args := range [][]string{
		{"device-key", "R-001", "--master-secret", "s3cret"},
		{"device-key", "--master-secret", "s3cret", "R-001"},
		{"device-key", "--master-secret=s3cret", "R-001", "--nats-url", unreachable}, // no NATS needed
		{"--nats-url", unreachable, "device-key", "R-001", "-master-secret", "s3cret"},
	} {
		if got := ok(t, hubctl(args...)); got != want {
			t.Errorf("%q: got %q, want %q", args, got, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bogus"},
		{"online", "extra"},
		{"--bogus", "device", "list"},
		{"--nats-url"},
		{"device"},
		{"device", "frob"},
		{"device", "list", "extra"},
		{"device", "list", "--bogus"},
		{"device", "add"},
		{"device", "add", "R-1"},
		{"device", "add", "R 1", "--type", "dog"},
		{"device", "add", "R-1", "--type", "dog.x"},
		{"device", "add", "R-1", "--type", "dog", "--group", "*"},
		{"device", "rm"},
		{"device", "rm", "a.b"},
		{"device", "list", "--type", "dog"}, // a flag of another action
		{"device-key", "R-1"},
		{"device-key", "R-1", "R-2", "--master-secret", "s"},
		{"device-key", "bad sn", "--master-secret", "s"},
		{"user", "add", "bob", "--password", "p", "--role", "root", "--groups", "a"},
		{"user", "add", "bob", "--password", "p", "--role", "device", "--groups", "a"},
		{"user", "add", "bob", "--password", "p", "--role", "admin"},
		{"user", "add", "bob", "--password", "p", "--role", "admin", "--groups", "a.b"},
		{"user", "add", "bob", "--role", "admin", "--groups", "a"},
		{"user", "add", "bob", "--password", strings.Repeat("x", 73), "--role", "admin", "--groups", "a"},
		{"user", "add", "b:b", "--password", "p", "--role", "admin", "--groups", "a"},
		{"user", "passwd", "bob"},
		{"user", "rm", "bob", "alice"},
		{"push", "/push/x", "{}"},
		{"push", "--to", "nope", "/push/x", "{}"},
		{"push", "--to", "sn:a.b", "/push/x", "{}"},
		{"push", "--to", "role:robot", "/push/x", "{}"},
		{"push", "--to", "all", "/push/x"},
		{"push", "--to", "all", "/push/x", "{"},
		{"push", "--to", "all", "/push/x", "[1]"},
		{"push", "--to", "all", "/push/x", "null"},
		{"push", "--to", "all", "push/x", "{}"},
		{"push", "--to", "all", "--where", `{"type":1}`, "/push/x", "{}"},
		{"push", "--to", "all", "--where", `{"color":"red"}`, "/push/x", "{}"},
		{"push", "--to", "all", "--where", `null`, "/push/x", "{}"},
		{"cmd", "R-1", "/cmd/x"},
		{"cmd", "R-1", "/cmd/x", "{"},
		{"cmd", "R-1", "/cmd/x", "[]"},
		{"cmd", "R-1", "cmd", "{}"},
		{"cmd", "R 1", "/cmd/x", "{}"},
		{"cmd", "R-1", "/cmd/x", "{}", "--timeout", "0s"},
		{"cmd", "R-1", "/cmd/x", "{}", "--timeout", "2m"},
		{"cmd", "R-1", "/cmd/x", "{}", "--timeout", "soon"},
	} {
		args := append([]string{"--nats-url", unreachable}, args...)
		line := failed(t, hubctl(args...), 2)
		if !strings.HasPrefix(line, "hubctl: ") {
			t.Errorf("%q: stderr %q lacks the hubctl: prefix", args, line)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: hubctl"},
		{[]string{"help"}, 0, "usage: hubctl"},
		{[]string{"-h"}, 0, "usage: hubctl"},
		{[]string{"--help"}, 0, "usage: hubctl"},
		{[]string{"device", "-h"}, 0, "usage: hubctl"},
		{[]string{"device", "add", "-h"}, 0, "usage: hubctl device add SN --type T"},
		{[]string{"device", "-h", "add"}, 0, "usage: hubctl device add SN --type T"},
		{[]string{"cmd", "--help"}, 0, "usage: hubctl cmd SN SERVICE JSON"},
	} {
		r := hubctl(tc.args...)
		if r.code != tc.code || r.stdout != "" || !strings.HasPrefix(r.stderr, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.want)
		}
	}
}

func TestNATSUnreachable(t *testing.T) {
	t.Parallel()
	line := failed(t, hubctl("device", "list", "--nats-url", "nats://user:pw@127.0.0.1:1"), 1)
	if !strings.HasPrefix(line, "hubctl: connect to NATS") || strings.Contains(line, "pw") {
		t.Fatalf("stderr %q", line)
	}
}

func TestDevices(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	url := ns.ClientURL()

	// Before any node has run there is no bucket: an empty list, and rm
	// finds nothing.
	if out := ok(t, hubctl("device", "list", "--nats-url", url)); out != "" {
		t.Fatalf("empty registry listed %q", out)
	}
	if line := failed(t, hubctl("device", "rm", "R-1", "--nats-url", url), 1); line != "hubctl: device R-1 not found" {
		t.Fatalf("rm of a missing device: %q", line)
	}

	ok(t, hubctl("--nats-url", url, "device", "add", "R-2", "--type", "dog", "--group", "g1"))
	ok(t, hubctl("device", "--type", "cat", "add", "--nats-url", url, "R-1")) // flags anywhere
	if got := readKV[schema.Device](t, ns, schema.BucketDevices, "R-1"); got != (schema.Device{Type: "cat", Group: "default"}) {
		t.Fatalf("stored %+v", got)
	}
	if out := ok(t, hubctl("device", "list", "--nats-url", url)); out != "R-1 cat default\nR-2 dog g1\n" {
		t.Fatalf("list %q", out)
	}

	// Adding again replaces the entry.
	ok(t, hubctl("device", "add", "R-1", "--type", "cat", "--group", "g2", "--nats-url", url))
	ok(t, hubctl("device", "rm", "R-2", "--nats-url", url))
	if out := ok(t, hubctl("device", "list", "--nats-url", url)); out != "R-1 cat g2\n" {
		t.Fatalf("list %q", out)
	}
	failed(t, hubctl("device", "rm", "R-2", "--nats-url", url), 1)
}

func TestDeviceRegistryReachesNode(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(hc *hub.Config, _ *node.Config) { hc.RequireRegistered = true })
	url := ns.ClientURL()

	if m := deviceAuth(t, n, "REG-1", "other"); m.Code != 401 {
		t.Fatalf("unregistered device: %s", m.Raw)
	}
	ok(t, hubctl("device", "add", "REG-1", "--type", "robo", "--group", "g9", "--nats-url", url))
	natstest.Eventually(t, propagation, func() error {
		m := deviceAuth(t, n, "REG-1", "other")
		var v struct{ Type, Group string }
		_ = json.Unmarshal(m.Values, &v)
		if m.Code != 0 || v.Type != "robo" || v.Group != "g9" {
			return fmt.Errorf("auth answered %s", m.Raw)
		}
		return nil
	})
	ok(t, hubctl("device", "rm", "REG-1", "--nats-url", url))
	natstest.Eventually(t, propagation, func() error {
		if m := deviceAuth(t, n, "REG-1", "other"); m.Code != 401 {
			return fmt.Errorf("removed device: %s", m.Raw)
		}
		return nil
	})
}

func TestUsers(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1") // creates the admin user
	url := ns.ClientURL()

	ok(t, hubctl("user", "add", "bob", "--password", "pw1", "--role", "viewer", "--groups", "g2, g1", "--nats-url", url))
	// The node knows bob once it accepts a token for him. That is the
	// cheap probe: a password login of a user the node does not know yet
	// would burn a full-cost bcrypt on purpose, seconds under -race.
	minted := mintToken(t, "bob", auth.RoleViewer, []string{"g2", "g1"}, readKV[auth.User](t, ns, schema.BucketUsers, "bob").UpdatedAt)
	natstest.Eventually(t, propagation, func() error {
		if c := tokenCode(t, n, minted); c != 0 {
			return fmt.Errorf("token of bob answered %d", c)
		}
		return nil
	})
	if c := loginCode(t, n, "bob", "pw1"); c != 0 {
		t.Fatalf("login of bob answered %d", c)
	}
	if line := failed(t, hubctl("--nats-url", url, "user", "add", "bob", "--password", "x", "--role", "admin", "--groups", "*"), 1); line != "hubctl: user bob already exists" {
		t.Fatalf("second add: %q", line)
	}
	if out := ok(t, hubctl("user", "list", "--nats-url", url)); out != "admin admin *\nbob viewer g2,g1\n" {
		t.Fatalf("list %q", out)
	}
	before := readKV[auth.User](t, ns, schema.BucketUsers, "bob")

	// A new password: role and groups stay, UpdatedAt moves on, the old
	// password stops working and open sessions end.
	session, _ := login(t, n, "bob", "pw1")
	ok(t, hubctl("user", "passwd", "bob", "--password", "pw2", "--nats-url", url))
	after := readKV[auth.User](t, ns, schema.BucketUsers, "bob")
	if after.Role != auth.RoleViewer || strings.Join(after.Groups, ",") != "g2,g1" || after.UpdatedAt <= before.UpdatedAt || after.PasswordHash == before.PasswordHash {
		t.Fatalf("after passwd: %+v, before: %+v", after, before)
	}
	if err := auth.CheckPassword(after.PasswordHash, "pw2"); err != nil {
		t.Fatalf("stored hash does not match the new password: %v", err)
	}
	if code := session.Closed(5 * time.Second); code != 4002 {
		t.Fatalf("session of bob closed with %d, want 4002 (kicked)", code)
	}
	natstest.Eventually(t, propagation, func() error {
		if c := loginCode(t, n, "bob", "pw2"); c != 0 {
			return fmt.Errorf("login with the new password answered %d", c)
		}
		if c := loginCode(t, n, "bob", "pw1"); c != 401 {
			return fmt.Errorf("login with the old password answered %d", c)
		}
		return nil
	})

	// Removed: open sessions end and tokens stop working (again the cheap
	// probe, rather than a password login).
	session, token := login(t, n, "bob", "pw2")
	ok(t, hubctl("user", "rm", "bob", "--nats-url", url))
	if code := session.Closed(5 * time.Second); code != 4002 {
		t.Fatalf("session of removed bob closed with %d, want 4002 (kicked)", code)
	}
	natstest.Eventually(t, propagation, func() error {
		if c := tokenCode(t, n, token); c != 401 {
			return fmt.Errorf("token of a removed user answered %d", c)
		}
		return nil
	})
	if out := ok(t, hubctl("user", "list", "--nats-url", url)); out != "admin admin *\n" {
		t.Fatalf("list %q", out)
	}
	if line := failed(t, hubctl("user", "rm", "bob", "--nats-url", url), 1); line != "hubctl: user bob not found" {
		t.Fatalf("second rm: %q", line)
	}
	if line := failed(t, hubctl("user", "passwd", "bob", "--password", "x", "--nats-url", url), 1); line != "hubctl: user bob not found" {
		t.Fatalf("passwd of a removed user: %q", line)
	}
	// Removed, the name is free again.
	ok(t, hubctl("user", "add", "bob", "--password", "pw3", "--role", "admin", "--groups", "*", "--nats-url", url))
}

func TestUserAddCreatesBucket(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	url := ns.ClientURL()
	if out := ok(t, hubctl("user", "list", "--nats-url", url)); out != "" {
		t.Fatalf("list %q", out)
	}
	ok(t, hubctl("user", "add", "alice", "--password", "pw", "--role", "admin", "--groups", "a,*", "--nats-url", url))
	if out := ok(t, hubctl("user", "list", "--nats-url", url)); out != "alice admin *\n" {
		t.Fatalf("list %q", out)
	}
	// A node started afterwards takes the bucket as it is and, since it
	// is not empty, creates no admin user.
	n := hubtest.StartNode(t, ns, "n1")
	if c := loginCode(t, n, "alice", "pw"); c != 0 {
		t.Fatalf("login answered %d", c)
	}
	if out := ok(t, hubctl("user", "list", "--nats-url", url)); out != "alice admin *\n" {
		t.Fatalf("list %q", out)
	}
}

func TestPush(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	url := ns.ClientURL()
	dog := hubtest.Device(t, n, "P-1", "dog")
	cat := hubtest.Device(t, n, "P-2", "cat")
	waitInterest(t, ns, subject(t, subjects.DevicePush, "P-1"), subject(t, subjects.DevicePush, "P-2"), subjects.AllPush)
	nextPush := func(c *hubtest.Client) hubtest.Msg {
		t.Helper()
		return c.Next(func(m hubtest.Msg) bool { return m.Op == "push" })
	}

	// To one device: the printed id is the one it receives.
	id := strings.TrimSuffix(ok(t, hubctl("push", "--to", "sn:P-1", "/push/hello", `{"x": 1}`, "--nats-url", url)), "\n")
	if id == "" || strings.ContainsAny(id, " \n") {
		t.Fatalf("push id %q", id)
	}
	if p := nextPush(dog); p.Service != "/push/hello" || p.ID != id || string(p.Values) != `{"x":1}` {
		t.Fatalf("dog got %s, want /push/hello with id %s", p.Raw, id)
	}

	// To all with a condition: only the dog. A plain push after it shows
	// the cat skipped the first (pushes on one subject keep their order).
	id1 := ok(t, hubctl("--nats-url", url, "push", "--where", `{"type":"dog"}`, "--to", "all", "/push/dogs", `{"n":1}`))
	id2 := ok(t, hubctl("push", "--to", "all", "/push/everyone", "{}", "--nats-url", url))
	if id1 == id2 {
		t.Fatalf("two pushes with id %q", id1)
	}
	if p := nextPush(dog); p.Service != "/push/dogs" || p.ID+"\n" != id1 {
		t.Fatalf("dog got %s", p.Raw)
	}
	if p := nextPush(dog); p.Service != "/push/everyone" {
		t.Fatalf("dog got %s", p.Raw)
	}
	if p := nextPush(cat); p.Service != "/push/everyone" || p.ID+"\n" != id2 {
		t.Fatalf("cat got %s, want only /push/everyone", p.Raw)
	}

	// To one device, with a condition it does not meet.
	ok(t, hubctl("push", "--to", "sn:P-2", "--where", `{"type":"dog"}`, "/push/nope", "{}", "--nats-url", url))
	ok(t, hubctl("push", "--to", "sn:P-2", "--where", `{"type":"cat"}`, "/push/yes", "{}", "--nats-url", url))
	if p := nextPush(cat); p.Service != "/push/yes" {
		t.Fatalf("cat got %s, want /push/yes", p.Raw)
	}
}

func TestCmd(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	url := ns.ClientURL()
	dev := hubtest.Device(t, n, "C-1", "dog")
	waitInterest(t, ns, subject(t, subjects.DeviceCmd, "C-1"))
	request := func(service string) hubtest.Msg {
		t.Helper()
		return dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == service })
	}

	// Answered: the values, compacted to one line.
	ch := start("cmd", "C-1", "/cmd/move", `{"to": "A"}`, "--nats-url", url)
	req := request("/cmd/move")
	if string(req.Args) != `{"to":"A"}` {
		t.Fatalf("device got %s", req.Raw)
	}
	dev.Send(`{"op":"response","service":"/cmd/move","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{"moved": true, "path": [1, 2]}}`)
	if out := ok(t, wait(t, ch)); out != `{"moved":true,"path":[1,2]}`+"\n" {
		t.Fatalf("stdout %q", out)
	}

	// Refused by the device: its code and msg, exit 1.
	ch = start("--nats-url", url, "cmd", "--timeout", "5s", "C-1", "/cmd/dance", "{}")
	req = request("/cmd/dance")
	dev.Send(`{"op":"response","service":"/cmd/dance","request_id":"` + req.RequestID + `","code":409,"result":false,"msg":"busy dancing"}`)
	if line := failed(t, wait(t, ch), 1); line != "409 busy dancing" {
		t.Fatalf("stderr %q", line)
	}

	// Not answered: the node holding the device gives up at --timeout.
	begin := time.Now()
	ch = start("cmd", "C-1", "/cmd/ignore", "{}", "--timeout", "300ms", "--nats-url", url)
	request("/cmd/ignore")
	if line := failed(t, wait(t, ch), 1); line != "408 device did not answer in time" {
		t.Fatalf("stderr %q", line)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Fatalf("gave up after %v, before --timeout", d)
	}

	// Never connected.
	if line := failed(t, hubctl("cmd", "C-2", "/cmd/move", "{}", "--nats-url", url), 1); line != "503 device C-2 is not connected" {
		t.Fatalf("stderr %q", line)
	}
}

// TestCmdWire checks what hubctl sends on hub.dev.<sn>.cmd, against a
// responder that plays the node, and that it gives up by itself when no
// answer comes at all.
func TestCmdWire(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	url := ns.ClientURL()
	nc := natstest.Connect(t, ns)
	sub, err := nc.SubscribeSync(subject(t, subjects.DeviceCmd, "W-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync(subject(t, subjects.DeviceCmd, "W-2")); err != nil { // never answers
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	ch := start("cmd", "W-1", "/cmd/x", `{"a":1}`, "--timeout", "1500ms", "--nats-url", url)
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(schema.HeaderTimeoutMS); got != "1500" {
		t.Errorf("%s header %q, want 1500", schema.HeaderTimeoutMS, got)
	}
	var body schema.CommandBody
	if err := json.Unmarshal(m.Data, &body); err != nil || body.Service != "/cmd/x" || string(body.Args) != `{"a":1}` {
		t.Errorf("body %s (%v)", m.Data, err)
	}
	reply, _ := json.Marshal(schema.Reply{Code: 0, Values: json.RawMessage(`null`)})
	if err := m.Respond(reply); err != nil {
		t.Fatal(err)
	}
	if out := ok(t, wait(t, ch)); out != "{}\n" {
		t.Fatalf("stdout %q", out)
	}

	if line := failed(t, hubctl("cmd", "W-2", "/cmd/x", "{}", "--timeout", "100ms", "--nats-url", url), 1); line != "408 device did not answer in time" {
		t.Fatalf("stderr %q", line)
	}
}

// TestEnv cannot run in parallel: it sets environment variables.
func TestEnv(t *testing.T) {
	ns := natstest.Run(t)
	url := ns.ClientURL()

	t.Setenv("HUB_NATS_URL", url)
	t.Setenv("HUB_MASTER_SECRET", "from-env")
	t.Setenv("HUB_TYPE", "envtype")
	ok(t, hubctl("device", "add", "E-1"))
	if out := ok(t, hubctl("device", "list")); out != "E-1 envtype default\n" {
		t.Fatalf("list %q", out)
	}
	want := hex.EncodeToString(auth.DeviceKey([]byte("from-env"), "E-1")) + "\n"
	if out := ok(t, hubctl("device-key", "E-1")); out != want {
		t.Fatalf("device-key %q, want %q", out, want)
	}
	if out := ok(t, hubctl("device-key", "E-1", "--master-secret", "s")); out == want {
		t.Fatal("--master-secret did not override HUB_MASTER_SECRET")
	}

	// The command line wins over the environment, before or after the
	// command name.
	t.Setenv("HUB_NATS_URL", unreachable)
	failed(t, hubctl("device", "list"), 1)
	ok(t, hubctl("--nats-url", url, "device", "list"))
	ok(t, hubctl("device", "list", "--nats-url", url))

	t.Setenv("HUB_TIMEOUT", "forever")
	failed(t, hubctl("cmd", "E-1", "/cmd/x", "{}"), 2)
}

// TestPushNoBus checks that a push that cannot reach NATS fails with 1.
func TestPushNoBus(t *testing.T) {
	t.Parallel()
	line := failed(t, hubctl("push", "--to", "all", "/push/x", "{}", "--nats-url", unreachable), 1)
	if !strings.HasPrefix(line, "hubctl: connect to NATS") {
		t.Fatalf("stderr %q", line)
	}
}
