//go:build browser

// The browser test drives the dashboard in headless Chromium against a real
// node and NATS server:
//
//	apt-get install -y chromium
//	go test -tags browser -count=1 -v ./node/dashboard
//
// It saves a screenshot to testdata/dashboard.png.

package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/node/dashboard"
)

const chromiumPath = "/usr/bin/chromium"

// fleet is what the test devices report: a small mixed fleet, so that the
// screenshot shows what the page is for.
var fleet = []struct {
	sn, typ, group string
	status         map[string]any
}{
	{"RT-1001", "retail", "mall-east", status(0, "Level 1 · entrance", 0, "all sensors ok", 0, "bin 20%", 78)},
	{"DG-2002", "dance_dog", "plaza-west", status(0, "Stage B", 0, "all sensors ok", 0, "bin empty", 64)},
	{"DR-3003", "dance_robot", "plaza-west", status(0, "Stage A", 2, "left camera occluded", 0, "bin empty", 41)},
	{"RB-4004", "rubbish", "depot", status(0, "Dock 3", 0, "all sensors ok", 3, "bin full", 88)},
	{"RT-1005", "retail", "mall-east", status(1, "Level 2 · lost fix", 0, "all sensors ok", 0, "bin 45%", 12)},
	{"RB-4006", "rubbish", "depot", status(0, "Yard", 0, "all sensors ok", 0, "bin 60%", 96)},
}

func status(loc int, locMsg string, insp int, inspMsg string, rub int, rubMsg string, pct int) map[string]any {
	return map[string]any{
		"location":    map[string]any{"code": loc, "msg": locMsg},
		"inspection":  map[string]any{"code": insp, "msg": inspMsg},
		"rubbish":     map[string]any{"code": rub, "msg": rubMsg},
		"electricity": map[string]any{"code": 0, "msg": "discharging", "percent": pct},
	}
}

func TestDashboardInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(hc *hub.Config, nc *node.Config) {
		hc.OfflineGrace = 300 * time.Millisecond
		hc.SummaryInterval = 250 * time.Millisecond
		nc.Dashboard = dashboard.Handler()
	})

	// Register the fleet, and wait until the node knows it (history of a
	// device the hub has never known is 404).
	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	for _, d := range fleet {
		hubtest.PutDevice(t, n.NC, d.sn, d.typ, d.group)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		for _, d := range fleet {
			if r := admin.Request("/admin/history", map[string]any{"sn": d.sn}); r.Code != 0 {
				return fmt.Errorf("%s not registered yet: %d %s", d.sn, r.Code, r.Msg)
			}
		}
		return nil
	})
	devs := map[string]*hubtest.Client{}
	for _, d := range fleet {
		c := hubtest.Device(t, n, d.sn, d.typ)
		c.MustOK("/device/status", d.status)
		devs[d.sn] = c
	}
	// One device left a while ago.
	_ = devs["RB-4006"].Conn.Close()

	// The browser reaches the node through a proxy that the test can cut.
	px := startProxy(t, n.Server.Listener.Addr().String())
	base := "http://" + px.addr()

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

	// Sign in through the form.
	step("open the page",
		chromedp.EmulateViewport(1440, 1000),
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-user"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#login-pass"), hubtest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
	)
	waitFor("the page is connected", `document.querySelector('#conn').dataset.state === 'connected' && !document.querySelector('#app-view').hidden`)
	if got := eval(`typeof window.FleetHub.Hub`); got != "function" {
		t.Errorf("window.FleetHub.Hub is %s", got)
	}
	if eval(`sessionStorage.getItem('fleethub.token') || ''`) == "" {
		t.Error("no token in sessionStorage after the login")
	}

	// The snapshot fills the table.
	waitFor("both rows appear", row("RT-1001")+` && `+row("DG-2002"))
	waitFor("the whole fleet is listed", `document.querySelectorAll('#fleet-body tr').length === 6`)
	waitFor("RB-4006 is offline", row("RB-4006")+`.dataset.online === 'false'`)
	if got := eval(row("DG-2002") + `.cells[4].textContent`); got != "64%" {
		t.Errorf("battery of DG-2002 shows %q, want 64%%", got)
	}
	if got := eval(row("DR-3003") + `.cells[6].textContent`); !strings.HasPrefix(got, "2") || !strings.Contains(got, "left camera occluded") {
		t.Errorf("inspection of DR-3003 shows %q", got)
	}

	// Live pushes: a status, and events of each priority.
	devs["DG-2002"].MustOK("/device/status", status(0, "Stage B", 0, "all sensors ok", 0, "bin empty", 63))
	waitFor("the status push updates the battery", row("DG-2002")+`.cells[4].textContent === '63%'`)
	for _, e := range []struct {
		sn, event, priority string
		data                map[string]any
	}{
		{"RT-1001", "door_opened", "normal", map[string]any{"door": "service hatch"}},
		{"DG-2002", "routine_started", "normal", map[string]any{"routine": "wave", "bpm": 112}},
		{"RB-4004", "threshold", "high", map[string]any{"metric": "bin_fill", "value": 92, "limit": 90}},
		{"RT-1005", "threshold", "high", map[string]any{"metric": "battery", "value": 12, "limit": 15}},
		{"DR-3003", "abnormal", "emergency", map[string]any{"reason": "fall detected", "tilt_deg": 48}},
	} {
		devs[e.sn].MustOK("/device/event", map[string]any{"event": e.event, "priority": e.priority, "data": e.data})
	}
	waitFor("the events appear in the feed", `document.querySelectorAll('#feed .feed-item').length === 5`)
	if got := eval(`document.querySelector('#feed .feed-item').dataset.priority + ' ' + document.querySelector('#feed .feed-item .feed-name').textContent`); got != "emergency abnormal" {
		t.Errorf("newest feed item is %q, want the emergency first", got)
	}
	if got := eval(`getComputedStyle(document.querySelector('#feed .prio-emergency')).borderLeftColor`); got != "rgb(220, 38, 38)" {
		t.Errorf("emergency item border %s, want red", got)
	}

	// A device that leaves goes offline after the grace.
	_ = devs["RT-1001"].Conn.Close()
	waitFor("RT-1001 shows offline", row("RT-1001")+`.dataset.online === 'false' && `+row("RT-1001")+`.querySelector('.pill').textContent === 'Offline'`)
	waitFor("DG-2002 is still online", row("DG-2002")+`.dataset.online === 'true'`)

	// A command from the device panel, answered by the device.
	got := make(chan hubtest.Msg, 1)
	go func() {
		dev := devs["DG-2002"]
		req := dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" })
		dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"msg":"","result":true,"values":{"accepted":true,"routine":"wave","eta_ms":1200}}`)
		got <- req
	}()
	step("send a command",
		chromedp.Click(chromedp.CSS(`#fleet-body tr[data-sn="DG-2002"]`)),
		chromedp.WaitVisible(chromedp.CSS("#device")),
		chromedp.SetValue(chromedp.CSS("#cmd-service"), "/cmd/dance"),
		chromedp.SetValue(chromedp.CSS("#cmd-args"), `{"routine": "wave", "repeat": 2}`),
		chromedp.Click(chromedp.CSS("#cmd-send")),
	)
	waitFor("the answer is shown", `document.querySelector('#cmd-result').dataset.status === 'ok' && document.querySelector('#cmd-result-body').textContent.includes('"accepted": true')`)
	select {
	case req := <-got:
		var args map[string]any
		_ = json.Unmarshal(req.Args, &args)
		if req.Service != "/cmd/dance" || args["routine"] != "wave" || args["repeat"] != float64(2) {
			t.Errorf("the device got %s", req.Raw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device got no command")
	}
	waitFor("the history lists the status reports", `document.querySelectorAll('#history li').length >= 2`)
	waitFor("the chart has points", `Number(document.querySelector('#chart').dataset.points) >= 3`)

	// Screenshot: settled, nothing focused, from the top.
	eval(`document.activeElement && document.activeElement.blur(), window.scrollTo(0, 0), ''`)
	time.Sleep(1300 * time.Millisecond) // the row flash and feed animations end
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	cancel()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join("testdata", "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s, %d KB", shot, len(png)/1024)
	if len(png) > 300*1024 {
		t.Errorf("screenshot is %d KB, want under 300 KB", len(png)/1024)
	}

	// An error answer: the offline device.
	step("command an offline device",
		chromedp.Click(chromedp.CSS(`#fleet-body tr[data-sn="RT-1001"]`)),
		chromedp.SetValue(chromedp.CSS("#cmd-service"), "/cmd/stop"),
		chromedp.Click(chromedp.CSS("#cmd-send")),
	)
	waitFor("the error is shown", `document.querySelector('#cmd-result').dataset.status === 'err' && document.querySelector('#cmd-result-head').textContent.includes('503')`)

	// Device strings are text, never markup.
	const markup = `<img src=x onerror="window.__xss=1">`
	devs["RB-4004"].MustOK("/device/event", map[string]any{"event": markup, "priority": "normal", "data": map[string]any{"note": "<b>bold</b>"}})
	waitFor("the markup shows as text", `document.querySelector('#feed .feed-item .feed-name').textContent === `+jsString(markup))
	if got := eval(`String(document.querySelectorAll('#feed img, #fleet-body img').length) + ' ' + String(window.__xss)`); got != "0 undefined" {
		t.Errorf("device markup was rendered: %s", got)
	}

	// Filters.
	step("filter offline devices", chromedp.SetValue(chromedp.CSS("#f-online"), "offline"), chromedp.Evaluate[chromedp.Void](`document.querySelector('#f-online').dispatchEvent(new Event('change'))`))
	if got := eval(`Array.from(document.querySelectorAll('#fleet-body tr')).filter(r => !r.hidden).map(r => r.dataset.sn).join(',')`); got != "RB-4006,RT-1001" {
		t.Errorf("offline filter shows %q", got)
	}
	step("search", chromedp.SetValue(chromedp.CSS("#f-online"), ""), chromedp.Evaluate[chromedp.Void](`document.querySelector('#f-online').dispatchEvent(new Event('change'))`),
		chromedp.SendKeys(chromedp.CSS("#f-search"), "rb-"))
	if got := eval(`Array.from(document.querySelectorAll('#fleet-body tr')).filter(r => !r.hidden).map(r => r.dataset.sn).join(',')`); got != "RB-4004,RB-4006" {
		t.Errorf("search rb- shows %q", got)
	}
	// The table draws only the rows that match: clear the search again.
	step("clear the search", chromedp.Evaluate[chromedp.Void](`(() => {
		const e = document.querySelector('#f-search');
		e.value = '';
		e.dispatchEvent(new Event('input'));
	})()`))
	waitFor("every row is back", `document.querySelectorAll('#fleet-body tr').length === 6`)

	// The connection breaks: the page reconnects by itself, resumes with its
	// token and subscribes again; news from before and after the break
	// arrive.
	connects := eval(`document.querySelector('#conn').dataset.connects`)
	px.dropAll()
	devs["DG-2002"].MustOK("/device/status", status(0, "Stage B", 0, "all sensors ok", 0, "bin empty", 55))
	waitFor("the page reconnects", `document.querySelector('#conn').dataset.state === 'connected' && document.querySelector('#conn').dataset.connects !== `+jsString(connects))
	waitFor("the new snapshot has the status sent during the break", row("DG-2002")+`.cells[4].textContent === '55%'`)
	hubtest.Device(t, n, "RT-1007", "retail")
	waitFor("a device that connects after the reconnect appears", row("RT-1007"))

	// A reload signs in again with the token from sessionStorage.
	step("reload", chromedp.Reload())
	waitFor("the reloaded page is connected without the form", `document.querySelector('#conn').dataset.state === 'connected' && document.querySelector('#login-view').hidden && !!`+row("RT-1007"))

	consoleMu.Lock()
	for _, m := range consoleMsgs {
		t.Logf("browser console: %s", m)
	}
	consoleMu.Unlock()
	if msgs := consoleProblems(); len(msgs) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(msgs, "\n"))
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var (
	consoleMu   sync.Mutex
	consoleMsgs []string
)

// consoleProblems lists uncaught exceptions and the page's own errors.
func consoleProblems() []string {
	consoleMu.Lock()
	defer consoleMu.Unlock()
	var out []string
	for _, m := range consoleMsgs {
		if strings.HasPrefix(m, "exception") || strings.Contains(m, "fleethub") && strings.HasPrefix(m, "error") {
			out = append(out, m)
		}
	}
	return out
}

// startBrowser starts headless Chromium with a throwaway profile, and
// any extra options.
func startBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1440, 1000),
	}
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, without a deadline (one would stop it).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			consoleMu.Lock()
			consoleMsgs = append(consoleMsgs, string(m.Type)+": "+m.Text)
			consoleMu.Unlock()
		}
	}()
	return ctx
}

// stepper returns step: run actions in the browser within 15 s, or fail
// the test naming what and showing the page.
func stepper(t *testing.T, ctx context.Context) func(what string, actions ...chromedp.Action[chromedp.Void]) {
	return func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v\npage: %s", what, err, pageState(ctx))
		}
	}
}

// waiter returns waitFor: poll the JavaScript expression expr until it is
// truthy, for up to 10 s, or fail the test naming what.
func waiter(t *testing.T, ctx context.Context) func(what, expr string) {
	return func(what, expr string) {
		t.Helper()
		waitExpr(t, ctx, what, expr, 10*time.Second, 50*time.Millisecond)
	}
}

// waitExpr polls the JavaScript expression expr every every until it is
// truthy, for up to timeout, or fails the test naming what.
func waitExpr(t *testing.T, ctx context.Context, what, expr string, timeout, every time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(sctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s (%s; last error %v)\npage: %s", what, expr, err, pageState(ctx))
		}
		time.Sleep(every)
	}
}

// pageState describes the page for a failure message.
func pageState(ctx context.Context) string {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Evaluate[string](`JSON.stringify({
		conn: document.querySelector('#conn') && document.querySelector('#conn').textContent.trim(),
		login: document.querySelector('#login-error') && document.querySelector('#login-error').textContent,
		rows: Array.from(document.querySelectorAll('#fleet-body tr')).map(r => r.dataset.sn + ':' + r.dataset.online + ':' + r.cells[4].textContent),
		feed: document.querySelectorAll('#feed .feed-item').length,
		cmd: document.querySelector('#cmd-result') && document.querySelector('#cmd-result').textContent.trim().slice(0, 300),
	})`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}

// proxy forwards TCP connections to the node and can cut them all, as a
// network failure would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.dropAll()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src) // ends when either side closes, or dropAll cuts it
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// dropAll closes every connection through the proxy.
func (p *proxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}
