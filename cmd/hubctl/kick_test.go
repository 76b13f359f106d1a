package main

import (
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
)

// hubctl kick SN ends the device's session with 4002 kicked; with another
// master secret the node refuses it; a device not connected is a 503.
func TestKick(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	url := ns.ClientURL()
	secret := string(hubtest.MasterSecret)
	dev := hubtest.Device(t, n, "K-1", "dog")
	waitInterest(t, ns, subject(t, subjects.DeviceCmd, "K-1"))

	if line := failed(t, hubctl("kick", "K-1", "--master-secret", "another-secret-0123456789", "--nats-url", url), 1); line != "hubctl: kick K-1: no answer within 2s: is --master-secret the nodes' one?" {
		t.Fatalf("stderr %q", line)
	}
	dev.MustOK("/ping", nil)
	if line := failed(t, hubctl("kick", "K-1", "--nats-url", url), 2); line == "" {
		t.Fatalf("no usage error without a master secret")
	}
	ok(t, hubctl("kick", "K-1", "--master-secret", secret, "--nats-url", url))
	if code := dev.Closed(5 * time.Second); code != wire.CloseKicked || dev.CloseText() != "kicked" {
		t.Fatalf("closed with %d %q, want 4002 kicked", code, dev.CloseText())
	}
	if line := failed(t, hubctl("kick", "K-2", "--master-secret", secret, "--nats-url", url), 1); line != "503 device K-2 is not connected" {
		t.Fatalf("stderr %q", line)
	}
}
