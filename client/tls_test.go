package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
)

// TestDialWSS: a device and an admin connect over wss:// trusting the
// test CA through TLSConfig and LoadCAFile; the admin's command reaches
// the device. Without the CA, Dial fails with the x509 reason.
func TestDialWSS(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "hub")
	n := hubtest.StartNode(t, natstest.Run(t), "n1", hubtest.TLS(leaf.CertFile, leaf.KeyFile))
	url := "wss://" + n.Serve(t) + "/ws"
	pool, err := client.LoadCAFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	tlsConfig := &tls.Config{RootCAs: pool}
	dev, err := client.Dial(ctx, client.Config{
		URL: url, TLSConfig: tlsConfig,
		Device: &client.DeviceAuth{SN: "W-1", Key: auth.DeviceKey(hubtest.MasterSecret, "W-1")},
		OnCommand: func(context.Context, client.Command) client.Result {
			return client.Result{Values: map[string]any{"ok": true}}
		},
	})
	if err != nil {
		t.Fatalf("device: %v", err)
	}
	defer dev.Close()
	admin, err := client.Dial(ctx, client.Config{
		URL: url, TLSConfig: tlsConfig,
		Login: &client.LoginAuth{Username: "admin", Password: hubtest.AdminPassword},
	})
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Command(ctx, "W-1", "/cmd/x", nil, 5*time.Second); err != nil {
		t.Fatalf("command over wss: %v", err)
	}

	_, err = client.Dial(ctx, client.Config{
		URL: url, Login: &client.LoginAuth{Username: "admin", Password: hubtest.AdminPassword},
	})
	if err == nil || !strings.Contains(err.Error(), "x509") {
		t.Fatalf("dial without the CA: %v, want the x509 reason", err)
	}
}

func TestTLSConfigWithDialerRefused(t *testing.T) {
	cfg := client.Config{
		URL: "wss://127.0.0.1:1/ws", Token: "t",
		Dialer: &websocket.Dialer{}, TLSConfig: &tls.Config{},
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "TLSConfig") {
		t.Fatalf("Validate: %v, want TLSConfig and Dialer refused together", err)
	}
}

func TestLoadCAFile(t *testing.T) {
	ca := testpki.NewCA(t)
	pool, err := client.LoadCAFile(ca.File)
	if err != nil || !pool.Equal(ca.Pool()) {
		t.Fatalf("LoadCAFile: %v", err)
	}
	if _, err := client.LoadCAFile(filepath.Join(t.TempDir(), "none.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.LoadCAFile(notPEM); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("file without PEM: %v", err)
	}
}
