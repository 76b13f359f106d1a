package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// embeddedConf writes a nats-server conf for the embedded server: a free
// loopback client port, the JetStream store in the test's directory, and
// body. It returns the file and the client URL.
func embeddedConf(t *testing.T, body string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	port := natstest.FreePort(t)
	f := filepath.Join(dir, "nats.conf")
	text := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\n%s", port, filepath.ToSlash(filepath.Join(dir, "js")), body)
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, "nats://127.0.0.1:" + strconv.Itoa(port)
}

// serveConf runs serve on an embedded server started from conf until
// the test ends, and returns once the node is healthy.
func serveConf(t *testing.T, conf string) options {
	t.Helper()
	o := options{
		listen: freeAddr(t), natsListen: "127.0.0.1:-1", natsConf: conf, dataDir: filepath.Join(t.TempDir(), "data"),
		nodeID: "emb-1", masterSecret: string(hubtest.MasterSecret), adminPassword: "pw",
		pingInterval: 10 * time.Second, pongWait: 15 * time.Second, authTimeout: 5 * time.Second,
		tokenTTL: time.Hour, serviceTimeout: time.Second, queueBytes: 1 << 20, replicas: 1, maxMessageBytes: 65536,
		presenceTTL: time.Minute, nodeTTL: 5 * time.Second, offlineGrace: time.Second,
		summaryInterval: 5 * time.Second, statusHistory: 10, eventHistory: 10, recordAge: time.Hour,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not return")
		}
	})
	natstest.Eventually(t, 20*time.Second, func() error {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve returned: %v", err)
		default:
		}
		resp, err := http.Get("http://" + o.listen + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return o
}

// TestEmbeddedAuthorizationUsers: an embedded server whose conf has users
// (it stopped the node before) serves; its own users get in, strangers
// do not.
func TestEmbeddedAuthorizationUsers(t *testing.T) {
	conf, url := embeddedConf(t, `authorization { users: [ {user: backend, password: s3cret} ] }`)
	o := serveConf(t, conf)

	c := hubtest.Dial(t, "ws://"+o.listen+"/ws", nil)
	c.MustOK("/auth/device", hubtest.DeviceArgs("EMB-1", "retail"))

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("a NATS client without credentials got in")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("client without credentials: %v, want an authorization violation", err)
	}
	nc, err := nats.Connect(url, nats.UserInfo("backend", "s3cret"))
	if err != nil {
		t.Fatalf("the conf's user: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	natstest.Eventually(t, 10*time.Second, func() error {
		kv, err := js.KeyValue(context.Background(), schema.BucketPresence)
		if err != nil {
			return err
		}
		_, err = kv.Get(context.Background(), "EMB-1")
		return err
	})
}

// TestEmbeddedAccounts: with two accounts, the node joins the one with
// JetStream, where a backend user of that account sees its records.
func TestEmbeddedAccounts(t *testing.T) {
	conf, url := embeddedConf(t, `accounts {
  HUB: { jetstream: enabled, users: [ {user: backend, password: b} ] }
  OTHER: { users: [ {user: other, password: o} ] }
}`)
	o := serveConf(t, conf)
	backend, err := nats.Connect(url, nats.UserInfo("backend", "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	other, err := nats.Connect(url, nats.UserInfo("other", "o"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	recs, strays := watchRecords(t, backend), watchRecords(t, other)

	c := hubtest.Dial(t, "ws://"+o.listen+"/ws", nil)
	c.MustOK("/auth/device", hubtest.DeviceArgs("EMB-2", "retail"))
	recs.waitN(t, "EMB-2", 1, 10*time.Second)
	if got, _ := recs.get("EMB-2"); !got[0].Online || got[0].Node != "emb-1" {
		t.Fatalf("record %+v, want EMB-2 online on emb-1", got[0])
	}
	// Same subject, other account: nothing crosses.
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := strays.get("EMB-2"); len(got) != 0 {
		t.Fatalf("account OTHER saw %d records of the hub's account", len(got))
	}
}

// TestEmbeddedRefusedStart runs the hub as a process: a start the
// embedded server must refuse exits 2 with one line on stderr naming the
// flag to set, before it listens anywhere.
func TestEmbeddedRefusedStart(t *testing.T) {
	port := strconv.Itoa(natstest.FreePort(t))
	ambiguous, _ := embeddedConf(t, `accounts {
  A: { jetstream: enabled, users: [ {user: a, password: a} ] }
  B: { jetstream: enabled, users: [ {user: b, password: b} ] }
}`)
	portOnly := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(portOnly, []byte("port: "+port+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	operator, _ := embeddedConf(t, "trusted_keys: [ "+opPub+" ]\n")
	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"nats-listen any", []string{"--nats-listen", "0.0.0.0:" + port}, "--nats-listen"},
		{"nats-listen ipv6 any", []string{"--nats-listen", "[::]:" + port}, "--nats-listen"},
		{"conf port only", []string{"--nats-conf", portOnly}, "--nats-conf"},
		{"ambiguous accounts", []string{"--nats-conf", ambiguous}, "--nats-account"},
		{"operator without creds", []string{"--nats-conf", operator}, "--nats-creds"},
		{"account without embedded server", []string{"--nats-url", "nats://127.0.0.1:" + port, "--nats-account", "HUB"}, "--nats-account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--master-secret", "a-test-secret-of-24-bytes", "--listen", freeAddr(t), "--data-dir", t.TempDir()}, tc.args...)
			code, stderr := runProcess(t, args...)
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "hub: ") || !strings.Contains(lines[0], tc.flag) {
				t.Fatalf("exit %d, stderr %q: want exit 2 and one line naming %s", code, stderr, tc.flag)
			}
		})
	}
}

// runProcess runs run(args) in a child process (this test binary) and
// returns its exit code and standard error.
func runProcess(t *testing.T, args ...string) (int, string) {
	t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedRunChild$")
	cmd.Env = append(os.Environ(), "FLEETHUB_HUB_CHILD_ARGS="+string(a))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("hub %q did not exit; stderr %q", args, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// TestEmbeddedRunChild is the child of runProcess: it runs the hub's
// run with the arguments in FLEETHUB_HUB_CHILD_ARGS and exits with its
// code.
func TestEmbeddedRunChild(t *testing.T) {
	a := os.Getenv("FLEETHUB_HUB_CHILD_ARGS")
	if a == "" {
		t.Skip("runs only as the child process of runProcess")
	}
	var args []string
	if err := json.Unmarshal([]byte(a), &args); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(args))
}
