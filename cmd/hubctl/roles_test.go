package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/bustest"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// TestRolesOnShippedConf runs hubctl with operator and backend keys
// against docs/nats-accounts.conf as it ships, with a node connected as a
// hub node: the operator's commands all work, and a backend's writes to
// the registry and the users are refused with one line while its pushes,
// commands and reads still work.
func TestRolesOnShippedConf(t *testing.T) {
	t.Parallel()
	bus := bustest.Start(t)
	n := hubtest.StartNodeOn(t, bus.Connect(t, bustest.RoleNode).Conn, "node-a")
	url := bus.Proc.URL()
	as := func(r bustest.Role, args ...string) result {
		args = append(args, "--nats-url", url, "--nats-nkey", bus.Keys[r].SeedFile)
		if r == bustest.RoleBackend {
			args = append(args, "--nats-inbox-prefix", "_INBOX")
		}
		return hubctl(args...)
	}

	// The operator: registry and users, reads, pushes, commands.
	ok(t, as(bustest.RoleOperator, "device", "add", "R-1", "--type", "dog", "--group", "g1"))
	if out := ok(t, as(bustest.RoleOperator, "device", "list")); out != "R-1 dog g1\n" {
		t.Fatalf("device list %q", out)
	}
	ok(t, as(bustest.RoleOperator, "user", "add", "bob", "--password", "bob-password", "--role", "viewer", "--groups", "g1"))
	if out := ok(t, as(bustest.RoleOperator, "user", "list")); !strings.Contains(out, "bob viewer g1\n") {
		t.Fatalf("user list %q", out)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if code := loginCode(t, n, "bob", "bob-password"); code != 0 {
			return fmt.Errorf("bob's login: %d", code)
		}
		return nil
	})
	dev := hubtest.Device(t, n, "R-1", "dog")
	natstest.Eventually(t, 10*time.Second, func() error {
		r := as(bustest.RoleBackend, "online")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "R-1 dog g1 node-a ") {
			return fmt.Errorf("online as a backend: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		return nil
	})
	for _, r := range []bustest.Role{bustest.RoleOperator, bustest.RoleBackend} {
		ok(t, as(r, "push", "--to", "sn:R-1", "/note/hello", `{"from":"`+string(r)+`"}`))
		dev.Next(func(m hubtest.Msg) bool {
			return m.Op == "push" && m.Service == "/note/hello" && strings.Contains(string(m.Values), string(r))
		})
		args := []string{"cmd", "R-1", "/cmd/ping", "{}", "--nats-url", url, "--nats-nkey", bus.Keys[r].SeedFile}
		if r == bustest.RoleBackend {
			args = append(args, "--nats-inbox-prefix", "_INBOX")
		}
		ch := start(args...)
		req := dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == "/cmd/ping" })
		dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{"pong":true}}`)
		if out := ok(t, wait(t, ch)); out != `{"pong":true}`+"\n" {
			t.Fatalf("cmd as %s: %q", r, out)
		}
	}

	// The backend: no registry or user writes, no reading the users.
	for _, args := range [][]string{
		{"device", "add", "R-2", "--type", "dog", "--group", "g1"},
		{"device", "rm", "R-1"},
		{"user", "add", "eve", "--password", "eve-password", "--role", "admin", "--groups", "*"},
		{"user", "passwd", "admin", "--password", "owned-password"},
		{"user", "rm", "bob"},
		{"user", "list"},
	} {
		line := failed(t, as(bustest.RoleBackend, args...), 1)
		if !strings.Contains(line, "refused by the NATS permissions") {
			t.Errorf("backend %s: %q does not say the permissions refused it", strings.Join(args[:2], " "), line)
		}
		t.Logf("backend %s: %s", strings.Join(args[:2], " "), line)
	}
	if out := ok(t, as(bustest.RoleOperator, "device", "list")); out != "R-1 dog g1\n" {
		t.Fatalf("registry after the backend's tries: %q", out)
	}
	if out := ok(t, as(bustest.RoleOperator, "user", "list")); strings.Contains(out, "eve") || !strings.Contains(out, "bob") {
		t.Fatalf("users after the backend's tries: %q", out)
	}
	if code := loginCode(t, n, "admin", hubtest.AdminPassword); code != 0 {
		t.Fatalf("admin's login after the backend's passwd: %d", code)
	}
}
