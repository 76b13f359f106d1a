package client_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// TestRegistryChangeReconnects: `hubctl device add` on a live device
// (a put into hub_devices) makes the hub close its session with 4002
// "registry entry changed"; the client comes back by itself, with its
// usual backoff, and the new session carries the new group.
func TestRegistryChangeReconnects(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	var rec recorder
	cfg := deviceConfig("RG-1", n.WSURL())
	rec.hook(&cfg)
	dev := dial(t, cfg)
	if g := dev.Session().Group; g != "default" {
		t.Fatalf("group %q before the registry entry", g)
	}
	admin := dial(t, adminConfig(n.WSURL()))
	ctx := ctxT(t)

	hubtest.PutDevice(t, n.NC, "RG-1", "retail", "sh-01")
	st := rec.waitState(t, 1, client.StateDisconnected)
	if st.CloseCode != 4002 || !errors.Is(st.Err, client.ErrRegistryChanged) || !errors.Is(st.Err, client.ErrDisconnected) {
		t.Fatalf("disconnected with %d %v, want 4002 and ErrRegistryChanged", st.CloseCode, st.Err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if s := dev.Session(); s.Group != "sh-01" {
			return fmt.Errorf("session group %q", s.Group)
		}
		if err := dev.Err(); err != nil {
			return fmt.Errorf("client stopped: %v", err)
		}
		return nil
	})
	// The hub lists it online in its new group, and a push to that group
	// reaches it.
	natstest.Eventually(t, 5*time.Second, func() error {
		r, err := admin.Request(ctx, "/admin/devices", map[string]any{"online": true, "group": "sh-01"})
		if err != nil {
			return err
		}
		var v struct {
			Devices []struct {
				SN string `json:"sn"`
			} `json:"devices"`
		}
		if err := json.Unmarshal(r.Values, &v); err != nil {
			return err
		}
		if len(v.Devices) != 1 || v.Devices[0].SN != "RG-1" {
			return fmt.Errorf("online devices: %s", r.Values)
		}
		return nil
	})
	if _, err := admin.Push(ctx, map[string]any{"group": "sh-01"}, "/push/notice", map[string]any{"to": "sh-01"}, nil); err != nil {
		t.Fatalf("push to sh-01: %v", err)
	}
	rec.waitPush(t, "/push/notice", `"sh-01"`)
	if err := dev.ReportStatus(ctx, map[string]any{"location": map[string]any{"code": 0, "msg": "moved"}}); err != nil {
		t.Fatalf("status after the reconnection: %v", err)
	}
	natstest.Eventually(t, waitFor, func() error {
		if !rec.sawInOrder(client.StateConnected, client.StateDisconnected, client.StateConnecting, client.StateConnected) {
			return fmt.Errorf("states %v", rec.stateKinds())
		}
		return nil
	})
	if slices.Contains(rec.stateKinds(), client.StateClosed) {
		t.Fatalf("the client closed: states %v", rec.stateKinds())
	}
}

// TestAccountChangeKickIsFinal: a 4002 for any other reason stays final.
// On a real node: the user's groups change, the hub closes its session
// with 4002 "account changed", and the client stops with ErrKicked.
func TestAccountChangeKickIsFinal(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	hubtest.PutUser(t, n.NC, "ops", "ops-pw", auth.RoleAdmin, "g1")
	var rec recorder
	cfg := client.Config{URL: n.WSURL(), Login: &client.LoginAuth{Username: "ops", Password: "ops-pw"}}
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	rec.hook(&cfg)
	var c *client.Client
	natstest.Eventually(t, 5*time.Second, func() error { // until the node has seen the user
		var err error
		c, err = client.Dial(ctxT(t), cfg)
		return err
	})
	t.Cleanup(func() { _ = c.Close() })

	hubtest.PutUser(t, n.NC, "ops", "ops-pw", auth.RoleAdmin, "g2")
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		t.Fatal("the client is still running after the account change")
	}
	if err := c.Err(); !errors.Is(err, client.ErrKicked) || !strings.Contains(err.Error(), "account changed") {
		t.Fatalf("Err %v, want ErrKicked with the hub's reason", err)
	}
	natstest.Eventually(t, waitFor, func() error { // the callbacks run after Done
		if _, ok := rec.lastState(client.StateClosed); !ok {
			return errors.New("no StateClosed yet")
		}
		return nil
	})
	if st, _ := rec.lastState(client.StateDisconnected); st.CloseCode != 4002 {
		t.Fatalf("last disconnection %+v, want 4002", st)
	}
}

// TestKickReasons: of the 4002s, only "registry entry changed" brings the
// client back; an admin's kick, or any other reason, stops it.
func TestKickReasons(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reason string
		back   bool
	}{
		{"registry entry changed", true},
		{"kicked", false},
		{"account changed", false},
		{"registry entry changed!", false},
		{"", false},
	} {
		t.Run(fmt.Sprintf("%q", tc.reason), func(t *testing.T) {
			h := newFakeHub(t)
			cfg := deviceConfig("R-140", h.url())
			cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
			c, fc := dialFake(t, h, cfg)
			fc.closeWith(4002, tc.reason)
			if !tc.back {
				select {
				case <-c.Done():
				case <-time.After(waitFor):
					t.Fatal("client still running")
				}
				if !errors.Is(c.Err(), client.ErrKicked) {
					t.Fatalf("Err %v, want ErrKicked", c.Err())
				}
				if n := h.count(); n != 1 {
					t.Fatalf("%d connections: the client came back", n)
				}
				return
			}
			h.accept().authDevice(t, "fake-2")
			natstest.Eventually(t, waitFor, func() error {
				if c.Session().Node != "fake-2" {
					return errors.New("not reconnected")
				}
				return nil
			})
			if c.Err() != nil {
				t.Fatalf("Err %v after the reconnection", c.Err())
			}
		})
	}
}

// TestDeviceKeyFromHex: what hubctl device-key prints decodes to the key;
// anything else is refused with a reason.
func TestDeviceKeyFromHex(t *testing.T) {
	t.Parallel()
	key := auth.DeviceKey(hubtest.MasterSecret, "R-001")
	printed := hex.EncodeToString(key) + "\n" // as hubctl prints it
	for _, s := range []string{printed, strings.ToUpper(printed), "  " + printed} {
		got, err := client.DeviceKeyFromHex(s)
		if err != nil || string(got) != string(key) {
			t.Fatalf("DeviceKeyFromHex(%q) = %x, %v", s, got, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"\n", "empty"},
		{printed[:62], "62 hex digits, want 64"},
		{printed[:63], "63 hex digits, want 64"},
		{printed[:64] + "00", "66 hex digits, want 64"},
		{"g" + printed[1:], `"g" at offset 0 is not a hex digit`},
		{printed[:10] + "é" + printed[12:], `"\xc3" at offset 10 is not a hex digit`},
		{string(key), "not a hex digit"},
	} {
		got, err := client.DeviceKeyFromHex(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || got != nil {
			t.Errorf("DeviceKeyFromHex(%q) = %x, %v; want an error with %q", tc.in, got, err, tc.want)
		}
	}
}

// TestHexKeyHint: a device given the hex text of its key instead of the
// bytes is refused "401 bad signature"; the error says what to do, and is
// still the hub's *Error. A key that is simply wrong gets no hint.
func TestHexKeyHint(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	printed := hex.EncodeToString(auth.DeviceKey(hubtest.MasterSecret, "R-141"))
	for _, tc := range []struct {
		name string
		key  []byte
		hint bool
	}{
		{"hex text", []byte(printed), true},
		{"hex text with its newline", []byte(printed + "\n"), true},
		{"wrong bytes", auth.DeviceKey([]byte("another-secret-0123456789"), "R-141"), false},
		{"wrong hex of another length", []byte(printed[:40]), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctxT(t), waitFor)
			defer cancel()
			_, err := client.Dial(ctx, client.Config{URL: n.WSURL(), Device: &client.DeviceAuth{SN: "R-141", Key: tc.key}})
			var e *client.Error
			if !errors.As(err, &e) || e.Code != 401 || e.Msg != "bad signature" {
				t.Fatalf("Dial: %v, want the hub's 401 bad signature", err)
			}
			if got := strings.Contains(err.Error(), "the key looks like hex: decode it with client.DeviceKeyFromHex"); got != tc.hint {
				t.Fatalf("hint %v in %q, want %v", got, err, tc.hint)
			}
		})
	}
	// And decoded, the same text is the key.
	key, err := client.DeviceKeyFromHex(printed)
	if err != nil {
		t.Fatal(err)
	}
	dial(t, client.Config{URL: n.WSURL(), Device: &client.DeviceAuth{SN: "R-141", Key: key}})
}

// An admin's Kick (/admin/kick) ends the device's session with 4002
// "kicked", which the device's client takes as final; a second Kick of
// the device, no longer connected, is a 503.
func TestAdminKickIsFinal(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	dev := dial(t, deviceConfig("KK-1", n.WSURL()))
	admin := dial(t, adminConfig(n.WSURL()))
	ctx := ctxT(t)
	if err := admin.Kick(ctx, "KK-1"); err != nil {
		t.Fatalf("kick: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if err := dev.Err(); !errors.Is(err, client.ErrKicked) {
			return fmt.Errorf("device client error %v, want ErrKicked", err)
		}
		return nil
	})
	var e *client.Error
	if err := admin.Kick(ctx, "KK-1"); !errors.As(err, &e) || e.Code != 503 {
		t.Fatalf("second kick: %v, want a 503", err)
	}
}
