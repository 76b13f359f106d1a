package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
)

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"extra-argument", "--dev"},
		{"--pong-wait", "soon"},
		{}, // no master secret outside --dev
		{"--master-secret", "s", "--log-format", "xml"},
		{"--dev", "--dc", "east.1"},
		{"--dev", "--js-domain", "a b"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func TestEnvFlag(t *testing.T) {
	t.Setenv("HUB_PONG_WAIT", "never")
	if code := run([]string{"--dev"}); code != 2 {
		t.Fatalf("bad HUB_PONG_WAIT accepted: exit %d", code)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeEmbedded runs the node as `hub --dev` does: an embedded NATS
// server, a device session, and a clean stop that closes it with 1012.
func TestServeEmbedded(t *testing.T) {
	o := options{
		listen: freeAddr(t), natsListen: "127.0.0.1:-1", dataDir: filepath.Join(t.TempDir(), "data"),
		nodeID: "t-1", masterSecret: string(hubtest.MasterSecret), adminPassword: "pw",
		pingInterval: 10 * time.Second, pongWait: 15 * time.Second, authTimeout: 5 * time.Second,
		tokenTTL: time.Hour, serviceTimeout: time.Second, queueBytes: 1 << 20, replicas: 1, maxMessageBytes: 65536,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	natstest.Eventually(t, 15*time.Second, func() error {
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
	c := hubtest.Dial(t, "ws://"+o.listen+"/ws", nil)
	c.MustOK("/auth/device", hubtest.DeviceArgs("R-1", "retail"))
	cancel()
	if code := c.Closed(10 * time.Second); code != websocket.CloseServiceRestart {
		t.Fatalf("closed with %d, want 1012", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return")
	}
}
