package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

func TestDeviceReportsAndPings(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	c := dial(t, deviceConfig("R-001", n.WSURL()))
	ctx := ctxT(t)

	s := c.Session()
	if s.Role != "device" || s.SN != "R-001" || s.Type != "retail" || s.Group != "default" || s.Node != "node-a" || s.ID == "" || s.PingInterval != 10*time.Second {
		t.Fatalf("session %+v", s)
	}
	status := map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 80}}
	if err := c.ReportStatus(ctx, status); err != nil {
		t.Fatalf("status: %v", err)
	}
	if err := c.ReportEvent(ctx, "threshold", "high", map[string]any{"temp": 71}); err != nil {
		t.Fatalf("event: %v", err)
	}
	before := time.Now()
	at, err := c.Ping(ctx)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if d := at.Sub(before); d < -5*time.Second || d > 5*time.Second {
		t.Fatalf("server time %v, local %v", at, before)
	}

	// The hub's refusals come back as *Error, with the session going on.
	err = c.ReportStatus(ctx, map[string]any{"location": "kitchen"})
	var e *client.Error
	if !errors.As(err, &e) || e.Code != 400 || !strings.Contains(e.Msg, "location") {
		t.Fatalf("bad status: got %v, want a 400 naming location", err)
	}
	r, err := c.Request(ctx, "/admin/devices", nil)
	if !errors.As(err, &e) || e.Code != 403 || r.Code != 403 || string(r.Values) != "{}" {
		t.Fatalf("admin service as a device: %+v, %v", r, err)
	}
	if _, err := c.Request(ctx, "/device/status", []int{1}); err == nil {
		t.Fatal("args that are not an object were sent")
	}
}

func TestAdminSubscribesAndSeesDevice(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	ctx := ctxT(t)
	var rec recorder
	cfg := adminConfig(n.WSURL())
	rec.hook(&cfg)
	admin := dial(t, cfg)
	if s := admin.Session(); s.Role != "admin" || s.User != "admin" || s.Token == "" || len(s.Groups) != 1 || s.Groups[0] != "*" || time.Until(s.ExpiresAt) < time.Hour {
		t.Fatalf("session %+v", s)
	}

	snap, err := admin.Subscribe(ctx, map[string]any{"all": true})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if string(snap) != `{"devices":[]}` {
		t.Fatalf("snapshot %s", snap)
	}

	var devRec recorder
	dcfg := deviceConfig("R-002", n.WSURL())
	devRec.hook(&dcfg)
	dev := dial(t, dcfg)
	rec.waitPush(t, "/push/presence", `"online":true`)
	if err := dev.ReportStatus(ctx, map[string]any{"rubbish": map[string]any{"code": 0, "msg": "half", "level": 51}}); err != nil {
		t.Fatalf("status: %v", err)
	}
	rec.waitPush(t, "/push/status", `"level":51`)

	snap, err = admin.Subscribe(ctx, map[string]any{"devices": []string{"R-002"}, "topics": []string{"status"}})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	var v struct {
		Devices []struct {
			SN     string `json:"sn"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(snap, &v); err != nil || len(v.Devices) != 1 || v.Devices[0].SN != "R-002" || !v.Devices[0].Online {
		t.Fatalf("snapshot %s (%v)", snap, err)
	}
	natstest.Eventually(t, waitFor, func() error {
		if n := rec.snapshotCount(); n != 2 {
			return fmt.Errorf("%d snapshots delivered, want 2", n)
		}
		return nil
	})
	if err := admin.Unsubscribe(ctx, map[string]any{"devices": []string{"R-002"}, "topics": []string{"status"}}); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}

	// The admin pushes to the device.
	id, err := admin.Push(ctx, map[string]any{"sn": "R-002"}, "/push/hello", map[string]any{"n": 7}, nil)
	if err != nil || id == "" {
		t.Fatalf("push: %q, %v", id, err)
	}
	if p := devRec.waitPush(t, "/push/hello", `"n":7`); p.ID != id {
		t.Fatalf("push id %q, want %q", p.ID, id)
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	ctx := ctxT(t)
	dcfg := deviceConfig("R-003", n.WSURL())
	dcfg.OnCommand = func(ctx context.Context, cmd client.Command) client.Result {
		switch cmd.Service {
		case "/cmd/echo":
			return client.Result{Values: cmd.Args}
		case "/cmd/busy":
			return client.Result{Code: 409, Msg: "busy docking", Values: map[string]any{"eta_s": 3}}
		case "/cmd/wait":
			<-ctx.Done()
			return client.Result{}
		}
		return client.Result{Code: 404, Msg: "unknown command " + cmd.Service}
	}
	dial(t, dcfg)
	dial(t, deviceConfig("R-004", n.WSURL())) // no handler
	admin := dial(t, adminConfig(n.WSURL()))

	r, err := admin.Command(ctx, "R-003", "/cmd/echo", map[string]any{"speed": 2, "to": "dock"}, 3*time.Second)
	if err != nil || string(r.Values) != `{"speed":2,"to":"dock"}` {
		t.Fatalf("echo: %s, %v", r.Values, err)
	}
	r, err = admin.Command(ctx, "R-003", "/cmd/busy", nil, 0)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != 409 || e.Msg != "busy docking" || string(r.Values) != `{"eta_s":3}` {
		t.Fatalf("busy: %+v, %v", r, err)
	}
	_, err = admin.Command(ctx, "R-004", "/cmd/echo", nil, 3*time.Second)
	if !errors.As(err, &e) || e.Code != 404 || e.Msg != "no command handler" {
		t.Fatalf("no handler: %v", err)
	}
	_, err = admin.Command(ctx, "R-003", "/cmd/wait", nil, 50*time.Millisecond)
	if !errors.As(err, &e) || e.Code != 408 {
		t.Fatalf("timeout: %v", err)
	}
	_, err = admin.Command(ctx, "R-999", "/cmd/echo", nil, time.Second)
	if !errors.As(err, &e) || e.Code != 503 {
		t.Fatalf("offline device: %v", err)
	}
}

func TestBadCredentials(t *testing.T) {
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	wrongKey := deviceConfig("R-005", n.WSURL())
	wrongKey.Device.Key = []byte("not the key")
	wrongPassword := adminConfig(n.WSURL())
	wrongPassword.Login.Password = "nope"
	badToken := client.Config{URL: n.WSURL(), Token: "not.a.token"}
	for name, cfg := range map[string]client.Config{"device": wrongKey, "login": wrongPassword, "token": badToken} {
		t.Run(name, func(t *testing.T) {
			var rec recorder
			rec.hook(&cfg)
			c, err := client.Dial(ctxT(t), cfg)
			var e *client.Error
			if c != nil || !errors.As(err, &e) || e.Code != 401 {
				t.Fatalf("got %v, %v; want a 401 *Error", c, err)
			}
			noClientGoroutines(t)
			if kinds := rec.stateKinds(); len(kinds) != 2 || kinds[0] != client.StateConnecting || kinds[1] != client.StateDisconnected {
				t.Fatalf("states %v", kinds)
			}
		})
	}
}

func TestDialTriesEachURL(t *testing.T) {
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	dead := deadURL(t)
	var rec recorder
	cfg := deviceConfig("R-006", dead, n.WSURL())
	rec.hook(&cfg)
	c := dial(t, cfg)
	if c.Session().Node != "node-a" {
		t.Fatalf("session %+v", c.Session())
	}
	want := []client.StateKind{client.StateConnecting, client.StateDisconnected, client.StateConnecting, client.StateConnected}
	natstest.Eventually(t, waitFor, func() error {
		if got := rec.stateKinds(); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("states %v, want %v", got, want)
		}
		return nil
	})

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Every URL failing: Dial returns the last error, and leaves nothing.
	cfg = deviceConfig("R-006", dead, dead)
	if _, err := client.Dial(ctxT(t), cfg); err == nil || !strings.Contains(err.Error(), "dial") {
		t.Fatalf("dead URL: %v", err)
	}
	noClientGoroutines(t)
}

// TestReconnectToAnotherNode: node A shuts down (1012); the clients come
// back on node B, and the admin's subscription is replayed there.
func TestReconnectToAnotherNode(t *testing.T) {
	ns := natstest.Run(t)
	a := hubtest.StartNode(t, ns, "node-a")
	b := hubtest.StartNode(t, ns, "node-b")
	ctx := ctxT(t)

	var devRec, adminRec recorder
	dcfg := deviceConfig("R-007", a.WSURL(), b.WSURL())
	devRec.hook(&dcfg)
	dev := dial(t, dcfg)
	acfg := adminConfig(a.WSURL(), b.WSURL())
	adminRec.hook(&acfg)
	admin := dial(t, acfg)
	if dev.Session().Node != "node-a" || admin.Session().Node != "node-a" {
		t.Fatalf("not on node A: %+v %+v", dev.Session(), admin.Session())
	}
	if _, err := admin.Subscribe(ctx, map[string]any{"devices": []string{"R-007"}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := dev.ReportStatus(ctx, map[string]any{"location": map[string]any{"code": 0, "msg": "before"}}); err != nil {
		t.Fatal(err)
	}
	adminRec.waitPush(t, "/push/status", `"before"`)
	token := admin.Session().Token

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Node.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown A: %v", err)
	}

	for name, c := range map[string]*client.Client{"device": dev, "admin": admin} {
		natstest.Eventually(t, waitFor, func() error {
			if node := c.Session().Node; node != "node-b" {
				return fmt.Errorf("%s on %q", name, node)
			}
			return nil
		})
	}
	for name, rec := range map[string]*recorder{"device": &devRec, "admin": &adminRec} {
		natstest.Eventually(t, waitFor, func() error {
			if !rec.sawInOrder(client.StateConnected, client.StateDisconnected, client.StateConnected) {
				return fmt.Errorf("%s: states %v", name, rec.stateKinds())
			}
			return nil
		})
		d, ok := rec.lastState(client.StateDisconnected)
		if !ok || d.CloseCode != 1012 || !errors.Is(d.Err, client.ErrDisconnected) {
			t.Fatalf("%s: disconnected state %+v", name, d)
		}
	}
	// The admin resumed with its token rather than logging in again.
	if admin.Session().Token != token {
		t.Fatal("admin did not resume with its token")
	}

	// Requests go to node B, and the replayed subscription delivers news.
	if err := dev.ReportStatus(ctx, map[string]any{"location": map[string]any{"code": 0, "msg": "after"}}); err != nil {
		t.Fatalf("status after the move: %v", err)
	}
	adminRec.waitPush(t, "/push/status", `"after"`)
	natstest.Eventually(t, waitFor, func() error {
		if n := adminRec.snapshotCount(); n != 2 {
			return fmt.Errorf("%d snapshots, want the initial one and the replayed one", n)
		}
		return nil
	})
	if dev.Err() != nil || admin.Err() != nil {
		t.Fatalf("clients stopped: %v, %v", dev.Err(), admin.Err())
	}
}

// TestReplacedStops: a newer session for the same serial number closes the
// client's with 4001, and the client does not come back.
func TestReplacedStops(t *testing.T) {
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	var rec recorder
	cfg := deviceConfig("R-008", n.WSURL())
	rec.hook(&cfg)
	c := dial(t, cfg)
	newer := hubtest.Device(t, n, "R-008", "retail")
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		t.Fatal("client still running after being replaced")
	}
	if !errors.Is(c.Err(), client.ErrReplaced) {
		t.Fatalf("Err %v, want ErrReplaced", c.Err())
	}
	if _, err := c.Ping(context.Background()); !errors.Is(err, client.ErrReplaced) {
		t.Fatalf("ping after the end: %v", err)
	}
	natstest.Eventually(t, waitFor, func() error {
		if kinds := rec.stateKinds(); kinds[len(kinds)-1] != client.StateClosed {
			return fmt.Errorf("states %v", kinds)
		}
		return nil
	})
	if d, _ := rec.lastState(client.StateDisconnected); d.CloseCode != 4001 {
		t.Fatalf("disconnected state %+v", d)
	}
	// Run has returned, so nothing can reconnect: the newer session stays.
	newer.MustOK("/ping", nil)
	// The node forgets the replaced session once its transport has
	// reported the close, which may come just after the client saw it.
	natstest.Eventually(t, waitFor, func() error {
		if got := n.Hub.SessionCount(); got != 1 {
			return fmt.Errorf("%d sessions, want only the newer one", got)
		}
		return nil
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(c.Err(), client.ErrReplaced) {
		t.Fatalf("Close changed Err to %v", c.Err())
	}
	noClientGoroutines(t)
}

// TestNoGoroutineLeak: after Close, the process is back to the goroutines
// it had before the clients.
func TestNoGoroutineLeak(t *testing.T) {
	n := hubtest.StartNode(t, natstest.Run(t), "node-a")
	ctx := ctxT(t)
	// Warm up the node (first connection, first auth), then take the
	// baseline.
	warm := hubtest.Device(t, n, "R-warm", "retail")
	warm.MustOK("/ping", nil)
	baseline := runtime.NumGoroutine()

	var commands atomic.Int32
	dcfg := deviceConfig("R-009", n.WSURL())
	dcfg.OnCommand = func(ctx context.Context, cmd client.Command) client.Result {
		commands.Add(1)
		return client.Result{}
	}
	var rec recorder
	dcfg.OnPush = func(client.Push) {}
	dev, err := client.Dial(ctx, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	acfg := adminConfig(n.WSURL())
	rec.hook(&acfg)
	admin, err := client.Dial(ctx, acfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Subscribe(ctx, map[string]any{"all": true}); err != nil {
		t.Fatal(err)
	}
	if err := dev.ReportStatus(ctx, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Command(ctx, "R-009", "/cmd/x", nil, time.Second); err != nil {
		t.Fatal(err)
	}
	rec.waitPush(t, "/push/status", "R-009")
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Ping(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("ping after Close: %v", err)
	}
	noClientGoroutines(t)
	natstest.Eventually(t, waitFor, func() error {
		if g := runtime.NumGoroutine(); g > baseline {
			return fmt.Errorf("%d goroutines, baseline %d", g, baseline)
		}
		return nil
	})
	if commands.Load() != 1 {
		t.Fatalf("%d commands handled", commands.Load())
	}
	if kinds := rec.stateKinds(); kinds[len(kinds)-1] != client.StateClosed {
		t.Fatalf("states %v", kinds)
	}
}
