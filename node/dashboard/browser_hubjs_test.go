//go:build browser

package dashboard_test

import (
	"context"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/node/dashboard"
)

// TestHubJSKicksInBrowser drives hub.js in Chromium against a real node:
// a device whose registry entry changes (as `hubctl device add` on a live
// device does) is closed with 4002 "registry entry changed" and comes back
// by itself in its new group; a user whose account changes is closed with
// 4002 "account changed" and stays closed.
func TestHubJSKicksInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	n := hubtest.StartNode(t, natstest.Run(t), "n1", func(_ *hub.Config, nc *node.Config) { nc.Dashboard = dashboard.Handler() })
	base := n.Server.URL // http://127.0.0.1:port: a secure context, so Web Crypto is there

	// A user the node knows (it refuses logins until its watcher has seen it).
	hubtest.PutUser(t, n.NC, "ops", "ops-pw", auth.RoleAdmin, "g1")
	natstest.Eventually(t, 5*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{URL: n.WSURL(), Login: &client.LoginAuth{Username: "ops", Password: "ops-pw"}})
		if err != nil {
			return err
		}
		return c.Close()
	})

	ctx := startBrowser(t)
	step := stepper(t, ctx)
	waitFor := waiter(t, ctx)
	run := func(what, js string) {
		t.Helper()
		step(what, chromedp.Evaluate[chromedp.Void](js))
	}
	step("open a page of the node", chromedp.Navigate(base+"/"))
	waitFor("hub.js is loaded", `window.FleetHub && typeof window.FleetHub.Hub === 'function'`)

	key := hex.EncodeToString(auth.DeviceKey(hubtest.MasterSecret, "BR-1")) // what hubctl device-key prints
	run("connect a device", `
		window.devStates = [];
		window.dev = new FleetHub.Hub("/ws", { sn: "BR-1", key: `+jsString(key)+`, type: "retail", backoffBase: 250 });
		dev.on("state", (s) => devStates.push(s));
		void 0`)
	waitFor("the device is connected in group default", `dev.state === 'connected' && dev.session.role === 'device' && dev.session.group === 'default'`)
	hubtest.PutDevice(t, n.NC, "BR-1", "retail", "sh-01")
	waitFor("the device is back in sh-01", `dev.connects === 2 && dev.state === 'connected' && dev.session.group === 'sh-01'`)
	waitFor("it was closed with 4002 and reconnected with the backoff",
		`devStates.some((s) => s.state === 'disconnected' && s.code === 4002 && s.reason === 'registry entry changed' && s.willReconnect && s.retryIn <= 250)`)

	run("log in as ops", `
		window.opsStates = [];
		window.ops = new FleetHub.Hub("/ws", { username: "ops", password: "ops-pw", backoffBase: 50 });
		ops.on("state", (s) => opsStates.push(s));
		void 0`)
	waitFor("ops is connected", `ops.state === 'connected' && ops.session.user === 'ops'`)
	hubtest.PutUser(t, n.NC, "ops", "ops-pw", auth.RoleAdmin, "g2")
	waitFor("ops is closed for good", `ops.state === 'disconnected' && opsStates[opsStates.length - 1].code === 4002 &&
		opsStates[opsStates.length - 1].reason === 'account changed' && opsStates[opsStates.length - 1].willReconnect === false`)
	// The device, meanwhile, is still connected and can report.
	run("report", `dev.request("/device/status", { location: { code: 0, msg: "moved" } }).then(() => { window.reported = true; }); void 0`)
	waitFor("the device reported", `window.reported === true && ops.connects === 1`)
	if p := consoleProblems(); len(p) > 0 {
		t.Errorf("console: %q", p)
	}
}
