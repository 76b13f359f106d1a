package client_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/loadtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// TestNodeKilledAndRestarted kills the node process a device and an admin
// are connected to (SIGKILL: no close frame, no goodbye), starts a new
// one on the same address, and checks that both clients come back by
// themselves, the admin's subscription with them.
func TestNodeKilledAndRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs node processes; skipped with -short")
	}
	ns := natstest.Run(t)
	bin, err := loadtest.BuildHub(t.TempDir())
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	start := func(id string, extra ...string) *loadtest.Hub {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"--nats-url", ns.ClientURL(), "--node-id", id,
			"--master-secret", string(hubtest.MasterSecret), "--admin-password", hubtest.AdminPassword}, extra...)
		h, err := loadtest.StartHub(ctx, bin, args...)
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		t.Cleanup(func() { _ = h.Stop() })
		return h
	}
	first := start("first", "--listen", fmt.Sprintf("127.0.0.1:%d", natstest.RestartablePort(t))) // the second takes it over
	u, err := url.Parse(first.WSURL)
	if err != nil {
		t.Fatal(err)
	}

	var devRec, adminRec recorder
	dcfg := deviceConfig("K-1", first.WSURL)
	dcfg.MinBackoff, dcfg.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	devRec.hook(&dcfg)
	dev := dial(t, dcfg)
	acfg := adminConfig(first.WSURL)
	acfg.MinBackoff, acfg.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	adminRec.hook(&acfg)
	admin := dial(t, acfg)
	ctx := ctxT(t)
	if _, err := admin.Subscribe(ctx, map[string]any{"devices": []string{"K-1"}, "topics": []string{"status"}}); err != nil {
		t.Fatal(err)
	}

	first.Kill()
	devRec.waitState(t, 1, client.StateDisconnected)
	adminRec.waitState(t, 1, client.StateDisconnected)
	start("second", "--listen", u.Host)

	for name, c := range map[string]*client.Client{"device": dev, "admin": admin} {
		natstest.Eventually(t, waitFor, func() error {
			if node := c.Session().Node; node != "second" {
				return fmt.Errorf("%s on %q", name, node)
			}
			return nil
		})
	}
	if err := dev.ReportStatus(ctx, map[string]any{"location": map[string]any{"code": 0, "msg": "after restart"}}); err != nil {
		t.Fatalf("status after the restart: %v", err)
	}
	adminRec.waitPush(t, "/push/status", `"after restart"`)
	if dev.Err() != nil || admin.Err() != nil {
		t.Fatalf("clients stopped: %v, %v", dev.Err(), admin.Err())
	}
}
