//go:build browser

package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/node/dashboard"
)

// opsFleet is how many devices TestDashboardOperations seeds: enough for
// four-digit counts on the chart's axis.
const opsFleet = 1500

// TestDashboardOperations drives what operators do with the dashboard, on
// one node with a seeded fleet and a few real devices: the location by its
// name, the feed, the emergency count and the online chart filled from
// history on load, the device panel's session, address and node and its
// battery and status chart, kick and forget with their confirmations and
// refusals, the Nodes view, Low battery counting online devices only, a
// viewer seeing no admin action, and the page at 390 px wide.
func TestDashboardOperations(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(hc *hub.Config, nc *node.Config) {
		// A grace long enough for a second kick to find the device gone
		// while the page still shows it online.
		hc.OfflineGrace = 3 * time.Second
		// No summary while the page loads: the chart is drawn from history.
		hc.SummaryInterval = time.Minute
		hc.NodeAddr = "127.0.0.1:8080"
		nc.Dashboard = dashboard.Handler()
	})
	seed := natstest.Connect(t, ns)
	keepNodeAlive(t, seed, "sim-0")
	seedLargeFleet(t, seed, opsFleet, "sim-0")
	hubtest.PutUser(t, seed, "viewer1", "viewer-password-1", auth.RoleViewer, "*")

	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	natstest.Eventually(t, 30*time.Second, func() error {
		var v struct {
			Devices []json.RawMessage `json:"devices"`
		}
		m := admin.Request("/admin/devices", map[string]any{"online": true, "limit": 10000})
		if m.Code != 0 {
			return fmt.Errorf("/admin/devices: %d %s", m.Code, m.Msg)
		}
		m.Decode(t, &v)
		if len(v.Devices) != (opsFleet+2)/3 {
			return fmt.Errorf("%d seeded devices online, want %d", len(v.Devices), (opsFleet+2)/3)
		}
		return nil
	})
	// Low battery counts the online devices below 20%: of the seeded ones,
	// those seedLargeFleet puts online.
	lowOnline := 0
	for i := range opsFleet {
		if i%3 == 0 && i*37%101 < 20 {
			lowOnline++
		}
	}

	// Real devices, sorted before the seeded ones (the first page), which
	// report before the page opens.
	at := func(name string, code int) map[string]any {
		return map[string]any{"code": code, "msg": "ok", "name": name}
	}
	st := func(loc string, insp, pct int) map[string]any {
		return map[string]any{
			"location":    at(loc, 0),
			"inspection":  map[string]any{"code": insp, "msg": "inspection"},
			"rubbish":     map[string]any{"code": 0, "msg": "bin empty"},
			"electricity": map[string]any{"code": 0, "msg": "discharging", "percent": pct},
		}
	}
	devs := map[string]*hubtest.Client{}
	for _, sn := range []string{"AA-0001", "AA-0002", "AA-0003", "AA-0004"} {
		devs[sn] = hubtest.Device(t, n, sn, "retail")
	}
	for _, pct := range []int{30, 12, 5} {
		devs["AA-0001"].MustOK("/device/status", st("Dock 7", map[bool]int{true: 2}[pct == 12], pct))
	}
	devs["AA-0002"].MustOK("/device/status", st("Aisle 3", 0, 80))
	devs["AA-0004"].MustOK("/device/status", st("Yard", 0, 60))
	devs["AA-0001"].MustOK("/device/event", map[string]any{"event": "fall", "priority": "emergency", "data": map[string]any{"tilt": 48}})
	devs["AA-0002"].MustOK("/device/event", map[string]any{"event": "door_opened", "priority": "normal"})

	ctx := startBrowser(t)
	step := stepper(t, ctx)
	waitFor := waiter(t, ctx)
	eval := func(expr string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	row := func(sn string) string { return `document.querySelector('#fleet-body tr[data-sn="` + sn + `"]')` }
	signIn := func(user, password string) {
		t.Helper()
		step("sign in as "+user,
			chromedp.Navigate("http://"+n.Server.Listener.Addr().String()+"/"),
			chromedp.WaitVisible(chromedp.CSS("#login-form")),
			chromedp.SetValue(chromedp.CSS("#login-user"), user),
			chromedp.SendKeys(chromedp.CSS("#login-pass"), password),
			chromedp.Click(chromedp.CSS("#login-submit")),
		)
		waitFor("the page is connected", `document.querySelector('#conn').dataset.state === 'connected' && !document.querySelector('#app-view').hidden`)
	}
	// openDevice clicks the device's row (a click event on the row itself:
	// a mouse click at its place could hit another row while the page
	// scrolls to the panel).
	openDevice := func(sn string) {
		t.Helper()
		eval(row(sn) + `.click(), ''`)
		waitFor("the panel shows "+sn, `!document.querySelector('#device').hidden && document.querySelector('#device').dataset.sn === `+jsString(sn))
	}
	// click clicks a button by a click event, as openDevice does.
	click := func(sel string) {
		t.Helper()
		eval(`document.querySelector(` + jsString(sel) + `).click(), ''`)
	}
	confirm := func(button string) {
		t.Helper()
		click(button)
		waitFor("the confirmation is open", `document.querySelector('#confirm').open`)
		click("#confirm-ok")
	}
	// labelsFit checks that every label box noted by the chart lies inside it.
	labelsFit := func(what string) {
		t.Helper()
		got := eval(`(() => {
			const out = [];
			const cv = document.querySelector('#chart');
			for (const [x0, y0, x1, y1] of JSON.parse(cv.dataset.labels || '[]'))
				if (x0 < 0 || y0 < 0 || x1 > cv.clientWidth || y1 > cv.clientHeight) out.push('chart ' + [x0, y0, x1, y1] + ' outside ' + cv.clientWidth + 'x' + cv.clientHeight);
			const svg = document.querySelector('#d-chart');
			if (svg && !document.querySelector('#device').hidden) {
				const r = svg.getBoundingClientRect();
				for (const t of svg.querySelectorAll('text')) {
					const b = t.getBoundingClientRect();
					if (b.left < r.left - 0.5 || b.right > r.right + 0.5 || b.top < r.top - 0.5 || b.bottom > r.bottom + 0.5) out.push('device chart ' + JSON.stringify(t.textContent) + ' outside');
				}
			}
			return out.join('; ');
		})()`)
		if got != "" {
			t.Errorf("%s: labels cut: %s", what, got)
		}
		if n := eval(`String(JSON.parse(document.querySelector('#chart').dataset.labels || '[]').length)`); n == "0" {
			t.Errorf("%s: the chart noted no label", what)
		}
	}

	step("open the page", chromedp.EmulateViewport(1440, 1000))
	signIn("admin", hubtest.AdminPassword)
	waitFor("the real devices are listed", row("AA-0001")+` && `+row("AA-0004"))
	waitFor("the whole fleet is loaded", `/^1504 devices$/.test(document.querySelector('#fleet-count').textContent)`)

	// 1. The location by its name.
	if got := eval(row("AA-0001") + `.cells[5].textContent`); got != "0Dock 7" {
		t.Errorf("location of AA-0001 shows %q, want code 0 and Dock 7", got)
	}
	// 2. Feed, emergency count and chart from history, before any push.
	waitFor("the feed has the events sent before the page opened", `document.querySelectorAll('#feed .feed-item').length === 2`)
	if got := eval(`document.querySelector('#stat-alerts').textContent + ' ' + document.querySelector('#feed .feed-item').dataset.sn`); got != "1 AA-0002" {
		t.Errorf("emergency count and newest event: %q, want 1 AA-0002", got)
	}
	waitFor("the chart is drawn from history", `Number(document.querySelector('#chart').dataset.history) > 1 && Number(document.querySelector('#chart').dataset.points) > 1`)
	if got := eval(`document.querySelector('#chart').getAttribute('aria-label')`); got != "Devices online: 504 of 1504" {
		t.Errorf("chart says %q", got)
	}
	labelsFit("chart at 1440 px")
	// 8. Low battery counts online devices only.
	if got, want := eval(`document.querySelector('#stat-battery').textContent`), strconv.Itoa(lowOnline+1); got != want {
		t.Errorf("Low battery shows %s, want %s (the online devices below 20%%)", got, want)
	}

	// 3. The device panel: session, address, node, and the chart.
	openDevice("AA-0001")
	waitFor("the chart has its three reports", `document.querySelector('#d-chart').dataset.points === '3' && document.querySelectorAll('#d-chart .battery-line').length === 1`)
	if got := eval(`['node', 'address', 'session'].map(f => document.querySelector('#d-session dd[data-field="' + f + '"]').textContent).join(' | ')`); !regexpMatch(`^n1 \| 127\.0\.0\.1:\d+ \| \S+$`, got) {
		t.Errorf("panel shows node, address, session %q", got)
	}
	if got := eval(`String(document.querySelectorAll('#d-chart rect.seg-bad').length)`); got != "1" {
		t.Errorf("the chart shows %s inspection faults, want 1", got)
	}
	labelsFit("device chart at 1440 px")

	// 5. The Nodes view.
	waitFor("the nodes are listed", `Array.from(document.querySelectorAll('#nodes-body tr')).map(r => r.dataset.id).join(',') === 'n1,sim-0'`)
	if got := eval(`Array.from(document.querySelector('#nodes-body tr').cells).map(c => c.textContent).join(' | ')`); !regexpMatch(`^n1 \| 127\.0\.0\.1:8080 \| .+ \| \d+$`, got) {
		t.Errorf("node n1 shows %q", got)
	}

	// 4. Kick, confirmed; a second one finds the device gone: 503 shown.
	openDevice("AA-0003")
	waitFor("kick is offered, forget is not", `!document.querySelector('#d-kick').hidden && document.querySelector('#d-forget').hidden`)
	click("#d-kick")
	waitFor("the confirmation is open", `document.querySelector('#confirm').open`)
	click("#confirm-cancel")
	waitFor("the confirmation is closed", `!document.querySelector('#confirm').open`)
	devs["AA-0003"].MustOK("/ping", nil)
	confirm("#d-kick")
	waitFor("the kick is reported", `document.querySelector('#d-action').dataset.kind === 'ok'`)
	if code := devs["AA-0003"].Closed(5 * time.Second); code != 4002 {
		t.Errorf("kicked device closed with %d, want 4002", code)
	}
	confirm("#d-kick")
	waitFor("the 503 is shown", `document.querySelector('#d-action').dataset.kind === 'err' && document.querySelector('#d-action').textContent.includes('503')`)

	// 6. Forget an offline device, confirmed: it leaves the list.
	_ = devs["AA-0004"].Conn.Close()
	waitFor("AA-0004 shows offline", row("AA-0004")+`.dataset.online === 'false'`)
	openDevice("AA-0004")
	waitFor("forget is offered, kick is not", `!document.querySelector('#d-forget').hidden && document.querySelector('#d-kick').hidden`)
	confirm("#d-forget")
	waitFor("AA-0004 leaves the list and the panel closes", `!`+row("AA-0004")+` && document.querySelector('#device').hidden`)
	natstest.Eventually(t, 10*time.Second, func() error {
		m := admin.Request("/admin/devices", map[string]any{"limit": 10})
		if m.Code != 0 || json.Valid(m.Values) && contains(string(m.Values), `"AA-0004"`) {
			return fmt.Errorf("the listing still has AA-0004: %d %s", m.Code, m.Values)
		}
		return nil
	})
	step("reload", chromedp.Reload())
	waitFor("the reloaded page lists AA-0001 but not AA-0004", row("AA-0001")+` && !`+row("AA-0004"))

	// 8. A low device that goes offline leaves Low battery.
	_ = devs["AA-0001"].Conn.Close()
	waitFor("AA-0001 no longer counts as low", `document.querySelector('#stat-battery').textContent === `+jsString(strconv.Itoa(lowOnline)))

	// 7. 390 px wide: no page overflow, labels inside the charts.
	step("narrow", chromedp.EmulateViewport(390, 844))
	openDevice("AA-0002")
	waitFor("the device chart is drawn", `document.querySelector('#d-chart').dataset.points === '1'`)
	eval(`window.dispatchEvent(new Event('resize')), ''`)
	waitFor("the page does not overflow at 390 px", `document.documentElement.scrollWidth <= 390 && document.body.scrollWidth <= 390`)
	labelsFit("charts at 390 px")

	// A viewer sees no admin action.
	step("sign out", chromedp.EmulateViewport(1440, 1000))
	click("#logout")
	signIn("viewer1", "viewer-password-1")
	waitFor("AA-0002 is listed", row("AA-0002"))
	openDevice("AA-0002")
	waitFor("no kick, no forget", `!document.querySelector('#device').hidden && document.querySelector('#d-kick').hidden && document.querySelector('#d-forget').hidden`)
	waitFor("the viewer sees the nodes", `document.querySelectorAll('#nodes-body tr').length === 2`)

	if msgs := consoleProblems(); len(msgs) > 0 {
		t.Errorf("the page reported problems:\n%s", msgs)
	}
}

func regexpMatch(pattern, s string) bool {
	ok, _ := regexp.MatchString(pattern, s)
	return ok
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
