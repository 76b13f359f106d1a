package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
)

func TestTLSFlagsRefused(t *testing.T) {
	ca := testpki.NewCA(t)
	a, b := ca.Server(t, "a"), ca.Server(t, "b")
	missing := filepath.Join(t.TempDir(), "none.pem")
	for _, c := range []struct {
		opts tlsOptions
		want string
	}{
		{tlsOptions{cert: a.CertFile}, "--tls-cert and --tls-key go together"},
		{tlsOptions{key: a.KeyFile}, "--tls-cert and --tls-key go together"},
		{tlsOptions{cert: missing, key: a.KeyFile}, "--tls-cert " + missing},
		{tlsOptions{cert: a.CertFile, key: b.KeyFile}, "private key does not match"},
	} {
		err := c.opts.check()
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("check(%+v) = %v, want one line containing %q", c.opts, err, c.want)
		}
	}
	if err := (tlsOptions{cert: a.CertFile, key: a.KeyFile}).check(); err != nil {
		t.Errorf("a valid pair refused: %v", err)
	}
	for _, args := range [][]string{
		{"--dev", "--tls-cert", a.CertFile},
		{"--dev", "--tls-key", a.KeyFile},
		{"--dev", "--tls-cert", missing, "--tls-key", a.KeyFile},
	} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

// TestServeTLS runs the node with --tls-cert and --tls-key: /healthz over
// HTTPS, a device over WSS, and the log names https:// and wss://.
func TestServeTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "hub")
	o := options{
		listen: freeAddr(t), natsListen: "127.0.0.1:-1", dataDir: filepath.Join(t.TempDir(), "data"),
		nodeID: "t-1", masterSecret: string(hubtest.MasterSecret), adminPassword: "pw", dev: true,
		pingInterval: 10 * time.Second, pongWait: 15 * time.Second, authTimeout: 5 * time.Second,
		tokenTTL: time.Hour, serviceTimeout: time.Second, queueBytes: 1 << 20, replicas: 1, maxMessageBytes: 65536,
		tls: tlsOptions{cert: leaf.CertFile, key: leaf.KeyFile},
	}
	var logs hubtest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, slog.New(slog.NewTextHandler(&logs, nil))) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not return")
		}
	}()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	natstest.Eventually(t, 15*time.Second, func() error {
		resp, err := hc.Get("https://" + o.listen + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	for _, want := range []string{"ws=wss://" + o.listen + "/ws", "health=https://" + o.listen + "/healthz", "dashboard=https://" + o.listen + "/"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("wss://"+o.listen+"/ws", nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	conn.Close()
	if c, _, err := websocket.DefaultDialer.Dial("ws://"+o.listen+"/ws", nil); err == nil {
		c.Close()
		t.Fatal("ws:// upgraded on a TLS node")
	}
}
