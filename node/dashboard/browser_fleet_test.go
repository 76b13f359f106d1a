//go:build browser

package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/node/dashboard"
	"github.com/fleethub/fleethub/subjects"
)

// Budgets of the large fleet test (issue: "a dashboard with 100,000 known
// devices loads its first page within 2 s and scrolls without blocking").
const (
	largeFleet     = 100_000
	firstRowsLimit = 2 * time.Second
	frameGapLimit  = 200.0 // ms between two frames, at most, while scrolling
	domRowsLimit   = 200   // <tr> elements in the page, at most
	// cpuFrameLimit bounds the CPU time the renderer's main thread spends
	// on a scrolled frame, on average: unlike frame gaps, it does not grow
	// when other processes share the machine.
	cpuFrameLimit = 50.0 // ms
)

// largeSN is the serial number of device i of the large fleet.
func largeSN(i int) string { return fmt.Sprintf("FL-%06d", i) }

// TestDashboardLargeFleet opens the dashboard on a node that knows 100,000
// devices, written straight to JetStream as other nodes would have
// written them: a registry entry, a presence record and a status record
// each, and a presence entry for the third of them that are online on a
// simulated node. It measures the time from navigation to the first rows
// in the DOM, the frames while the rest of the listing comes in and while
// the table is scrolled, and how many rows the page holds.
func TestDashboardLargeFleet(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(hc *hub.Config, nc *node.Config) {
		hc.SummaryInterval = 500 * time.Millisecond
		nc.Dashboard = dashboard.Handler()
	})
	seed := natstest.Connect(t, ns, nats.Name("seed"))
	keepNodeAlive(t, seed, "sim-0")
	t0 := time.Now()
	seedLargeFleet(t, seed, largeFleet, "sim-0")
	t.Logf("seeded %d devices (registry, presence record, status record, a third online) in %v", largeFleet, time.Since(t0).Round(time.Millisecond))

	// Wait until the node counts them all, each as seeded (a registry
	// entry alone may count as offline before its presence record is read).
	wantOnline := (largeFleet + 2) / 3
	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"summary"}, "limit": 1})
	// Under -race a node that follows the whole fleet takes minutes.
	deadline := time.Now().Add(10 * time.Minute)
	var sum struct{ Online, Offline int }
	for {
		m, ok := admin.TryPush("/push/summary", time.Until(deadline))
		if !ok {
			t.Fatalf("the node did not count %d online and %d offline within 10 minutes (last: %+v)", wantOnline, largeFleet-wantOnline, sum)
		}
		m.Decode(t, &sum)
		if sum.Online == wantOnline && sum.Offline == largeFleet-wantOnline {
			t.Logf("node counts %d online, %d offline, %v after the seed began", sum.Online, sum.Offline, time.Since(t0).Round(time.Millisecond))
			break
		}
	}

	// And until the last status record is in the last device's view, so
	// that a node still working through the records does not push them to
	// the page while it loads (status records are read in order).
	last := largeSN(largeFleet - 1)
	for {
		var snap struct {
			Devices []struct {
				SN     string          `json:"sn"`
				Status json.RawMessage `json:"status"`
			} `json:"devices"`
		}
		admin.MustOK("/admin/subscribe", map[string]any{"devices": []string{last}, "topics": []string{"status"}}).Decode(t, &snap)
		admin.MustOK("/admin/unsubscribe", map[string]any{"devices": []string{last}, "topics": []string{"status"}})
		if len(snap.Devices) == 1 && len(snap.Devices[0].Status) > 0 && string(snap.Devices[0].Status) != "null" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the status of %s is not in its view within 10 minutes", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("node has every status, %v after the seed began", time.Since(t0).Round(time.Millisecond))

	ctx := startBrowser(t)
	eval := func(expr string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr, chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("evaluate %s: %v\npage: %s", expr, err, pageState(ctx))
		}
		return s
	}
	waitFor := func(what, expr string, timeout time.Duration) {
		t.Helper()
		waitExpr(t, ctx, what, expr, timeout, 20*time.Millisecond)
	}
	mark := func(name string) float64 {
		t.Helper()
		v, err := strconv.ParseFloat(eval(`String(performance.getEntriesByName(`+jsString(name)+`)[0].startTime)`), 64)
		if err != nil {
			t.Fatalf("mark %s: %v", name, err)
		}
		return v
	}

	// Sign in once, with the form.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := chromedp.Do(sctx,
		chromedp.EmulateViewport(1440, 1000),
		chromedp.Navigate("http://"+n.Server.Listener.Addr().String()+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-user"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#login-pass"), hubtest.AdminPassword),
	)
	cancel()
	if err != nil {
		t.Fatalf("open the page: %v", err)
	}
	clickAt := eval(`(document.querySelector('#login-submit').click(), String(performance.now()))`)
	waitFor("the first rows after the login", `performance.getEntriesByName('fleethub:first-rows').length`, 10*time.Second)
	at, _ := strconv.ParseFloat(clickAt, 64)
	t.Logf("sign-in to first rows: %.0f ms", mark("fleethub:first-rows")-at)

	// Open the dashboard again, signed in (the token is in sessionStorage):
	// from navigation to the first rows in the DOM. This is wall time on a
	// machine other tests share: a load over the budget is tried again, up
	// to three times, and the best counts.
	first := -1.0
	for attempt := 1; attempt <= 3 && (first < 0 || first > float64(firstRowsLimit.Milliseconds())); attempt++ {
		sctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		err = chromedp.Do(sctx, chromedp.Reload())
		cancel()
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		waitFor("the first rows after the reload", `performance.getEntriesByName('fleethub:first-rows').length`, 10*time.Second)
		ms := mark("fleethub:first-rows")
		t.Logf("navigation to first rows in the DOM: %.0f ms (budget %v)", ms, firstRowsLimit)
		if first < 0 || ms < first {
			first = ms
		}
	}
	if first > float64(firstRowsLimit.Milliseconds()) {
		t.Errorf("the first rows took %.0f ms after navigation at best, want under %v", first, firstRowsLimit)
	}

	// Frames from now on: the longest gap between two, the long tasks, the
	// most <tr> elements seen in a frame.
	eval(`(() => {
		const m = window.__frames = { gap: 0, last: 0, frames: 0, rows: 0, longTasks: 0, longTaskMs: 0, longestTask: 0 };
		const loop = (ts) => {
			if (m.last) m.gap = Math.max(m.gap, ts - m.last);
			m.last = ts;
			m.frames++;
			m.rows = Math.max(m.rows, document.getElementsByTagName('tr').length);
			requestAnimationFrame(loop);
		};
		requestAnimationFrame(loop);
		try {
			new PerformanceObserver((list) => {
				for (const e of list.getEntries()) {
					m.longTasks++;
					m.longTaskMs += e.duration;
					m.longestTask = Math.max(m.longestTask, e.duration);
				}
			}).observe({ type: 'longtask' });
		} catch (e) { m.noLongTasks = String(e); }
		return '';
	})()`)
	type frames struct {
		Gap, LongTaskMs, LongestTask float64
		Frames, Rows, LongTasks      int
		CPU                          float64 // ms of the renderer's main thread a frame, -1 unknown
	}
	browserPid := 0
	if p := chromedp.FromContext(ctx).Browser.Process(); p != nil {
		browserPid = p.Pid
	}
	lastCPU := rendererCPU(browserPid)
	// phase reads the frames since the last phase and starts counting
	// again; what names it in the log, or "" to leave it out.
	phase := func(what string) frames {
		t.Helper()
		// Two more frames, so that the last change is drawn and counted.
		var f frames
		if err := json.Unmarshal([]byte(eval(`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => {
			const m = window.__frames;
			r(JSON.stringify({ gap: m.gap, frames: m.frames, rows: m.rows, longTasks: m.longTasks, longTaskMs: m.longTaskMs, longestTask: m.longestTask }));
			Object.assign(m, { gap: 0, last: 0, frames: 0, rows: 0, longTasks: 0, longTaskMs: 0, longestTask: 0 });
		})))`)), &f); err != nil {
			t.Fatal(err)
		}
		cpu := rendererCPU(browserPid)
		f.CPU = -1
		if cpu >= 0 && lastCPU >= 0 && f.Frames > 0 {
			f.CPU = float64((cpu - lastCPU).Microseconds()) / 1000 / float64(f.Frames)
		}
		lastCPU = cpu
		if what != "" {
			t.Logf("%s: %d frames, longest gap %.0f ms, %d long tasks (%.0f ms, longest %.0f ms), renderer main thread %.1f ms CPU a frame, at most %d rows in the DOM",
				what, f.Frames, f.Gap, f.LongTasks, f.LongTaskMs, f.LongestTask, f.CPU, f.Rows)
		}
		if f.Rows >= domRowsLimit {
			t.Errorf("%s: %d rows in the DOM, want under %d", what, f.Rows, domRowsLimit)
		}
		return f
	}

	// The rest of the listing comes in page by page.
	waitFor("the whole fleet is listed", `performance.getEntriesByName('fleethub:fleet-loaded').length`, 60*time.Second)
	t.Logf("navigation to the whole fleet listed: %.0f ms", mark("fleethub:fleet-loaded"))
	phase("while the listing came in")
	if got := eval(`document.querySelector('#fleet-count').textContent`); got != strconv.Itoa(largeFleet)+" devices" {
		t.Errorf("fleet count shows %q", got)
	}

	// centerRow is the serial number of the row at the middle of the
	// table's viewport; scrolled half way, it is the middle device.
	const centerRow = `(() => {
		const w = document.querySelector('#table-wrap');
		const b = w.getBoundingClientRect();
		const tr = document.elementFromPoint(b.left + 40, b.top + w.clientHeight / 2).closest('tr[data-sn]');
		return tr ? tr.dataset.sn : '';
	})()`
	expectCenter := func(what string, want int) {
		t.Helper()
		sn := eval(centerRow)
		got, err := strconv.Atoi(strings.TrimPrefix(sn, "FL-"))
		if err != nil || got < want-2 || got > want+2 {
			t.Errorf("%s: the row at the middle of the table is %q, want about %s", what, sn, largeSN(want))
		}
	}
	const scrollMax = `(document.querySelector('#table-wrap').scrollHeight - document.querySelector('#table-wrap').clientHeight)`
	const toMiddle = `(document.querySelector('#table-wrap').scrollTop = ` + scrollMax + ` / 2, '')`

	// scroll runs a scroll from where setup puts the table, and counts its
	// frames. The frame gaps are wall time on a machine other tests share:
	// a phase over the limit runs again, up to three times, and the best
	// run counts. A table that blocks fails every run.
	var worst frames
	scroll := func(what, setup, run string) {
		t.Helper()
		var best frames
		for attempt := 1; attempt <= 3; attempt++ {
			eval(setup)
			phase("")
			eval(run)
			f := phase(what)
			if attempt == 1 || f.Gap < best.Gap {
				best = f
			}
			if f.Gap <= frameGapLimit {
				break
			}
		}
		if best.CPU > cpuFrameLimit {
			t.Errorf("%s: the renderer's main thread spent %.1f ms of CPU a frame, want under %.0f ms", what, best.CPU, cpuFrameLimit)
		}
		worst.CPU = max(worst.CPU, best.CPU)
		worst.Gap = max(worst.Gap, best.Gap)
		worst.LongestTask = max(worst.LongestTask, best.LongestTask)
		worst.Rows = max(worst.Rows, best.Rows)
	}

	// A fast fling from the top: 400 px a frame for 90 frames.
	scroll("fling, 400 px a frame for 90 frames", `(document.querySelector('#table-wrap').scrollTop = 0, '')`, `new Promise((r) => {
		const w = document.querySelector('#table-wrap');
		let k = 0;
		const step = () => { w.scrollTop += 400; if (++k < 90) requestAnimationFrame(step); else r(''); };
		requestAnimationFrame(step);
	})`)

	// A jump to the middle, as a drag of the scrollbar ends there.
	scroll("jump to the middle", `(document.querySelector('#table-wrap').scrollTop = 0, '')`, toMiddle)
	expectCenter("middle", largeFleet/2)

	// A drag of the scrollbar from the middle to the end: a long jump every frame.
	scroll("drag from the middle to the end over 60 frames", toMiddle, `new Promise((r) => {
		const w = document.querySelector('#table-wrap');
		const from = w.scrollTop, to = `+scrollMax+`;
		let k = 0;
		const step = () => { k++; w.scrollTop = from + (to - from) * k / 60; if (k < 60) requestAnimationFrame(step); else r(''); };
		requestAnimationFrame(step);
	})`)
	if got := eval(`Array.from(document.querySelectorAll('#fleet-body tr')).pop().dataset.sn`); got != largeSN(largeFleet-1) {
		t.Errorf("the last row drawn at the end is %q, want %s", got, largeSN(largeFleet-1))
	}
	t.Logf("scrolling, worst phase: frame gap %.0f ms, longest task %.0f ms, %.1f ms CPU a frame, %d rows in the DOM", worst.Gap, worst.LongestTask, worst.CPU, worst.Rows)
	if worst.Gap > frameGapLimit {
		t.Errorf("a frame waited %.0f ms while scrolling, want at most %.0f ms", worst.Gap, frameGapLimit)
	}

	// Back at the middle, a device that connects appears in place, and
	// its status updates its row.
	eval(toMiddle)
	phase("")
	mid := largeFleet / 2
	newSN := largeSN(mid) + "X"
	dev := hubtest.Device(t, n, newSN, "retail")
	waitFor("the new device appears after "+largeSN(mid), `(() => {
		const tr = document.querySelector('#fleet-body tr[data-sn="`+largeSN(mid)+`"]');
		return tr && tr.nextElementSibling && tr.nextElementSibling.dataset.sn === '`+newSN+`' && tr.nextElementSibling.dataset.online === 'true';
	})()`, 10*time.Second)
	dev.MustOK("/device/status", status(0, "Aisle 9", 0, "all sensors ok", 0, "bin 10%", 42))
	waitFor("its status shows", `document.querySelector('#fleet-body tr[data-sn="`+newSN+`"]').cells[4].textContent === '42%'`, 10*time.Second)
	waitFor("the count has it", `document.querySelector('#fleet-count').textContent === '`+strconv.Itoa(largeFleet+1)+` devices'`, 5*time.Second)
	phase("pushes applied at the middle")

	// Sorting every device by battery is one sort, on a click.
	eval(`(document.querySelector('#fleet-table th[data-sort="battery"]').click(), '')`)
	phase("sort by battery")
	eval(`(document.querySelector('#fleet-table th[data-sort="sn"]').click(), '')`)
	phase("sort by serial again")

	if msgs := consoleProblems(); len(msgs) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(msgs, "\n"))
	}
}

// rendererCPU is the CPU time that the main threads of the browser's
// renderer processes have used so far (Linux /proc), or -1 when it cannot
// be read. Unlike frame gaps, it does not grow when other processes share
// the machine.
func rendererCPU(browser int) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	parent := func(pid int) int {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 {
			return 0
		}
		p, _ := strconv.Atoi(f[1])
		return p
	}
	var total time.Duration
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmd, []byte("--type=renderer")) {
			continue
		}
		ours := false
		for p, hops := parent(pid), 0; p > 1 && hops < 8; p, hops = parent(p), hops+1 {
			if p == browser {
				ours = true
				break
			}
		}
		if !ours {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/task/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
		found = true
	}
	if !found {
		return -1
	}
	return total
}

// keepNodeAlive writes the liveness entry of a simulated node in hub_nodes
// every second until the test ends, so that its devices stay online.
func keepNodeAlive(t *testing.T, nc *nats.Conn, id string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := js.KeyValue(ctx, hub.BucketNodes)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	since := time.Now().UnixMilli()
	beat := func() error {
		b, _ := json.Marshal(hub.NodeEntry{Addr: "127.0.0.1:1", Since: since, Sessions: largeFleet / 3})
		_, err := kv.Put(ctx, id, b)
		return err
	}
	if err := beat(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = beat() // a missed beat is caught up by the next
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// seedLargeFleet writes count devices with pipelined JetStream publishes:
// for each, its hub_devices entry, a presence record and a status record;
// every third is online on node (with its hub_presence entry), the others
// went offline a while ago.
func seedLargeFleet(t *testing.T, nc *nats.Conn, count int, node string) {
	t.Helper()
	var failed atomic.Int64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }),
	)
	if err != nil {
		t.Fatal(err)
	}
	types := []string{"retail", "dance_dog", "dance_robot", "rubbish"}
	now := time.Now().UnixMilli()
	publish := func(m *nats.Msg) {
		// A publish waits for room among the ones in flight.
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second)); err != nil {
			t.Fatalf("publish %s: %v", m.Subject, err)
		}
	}
	for i := range count {
		sn := largeSN(i)
		typ, group := types[i%len(types)], fmt.Sprintf("zone-%02d", i%20)
		online := i%3 == 0
		since := now - int64(i%3600)*1000

		b, _ := json.Marshal(schema.Device{Type: typ, Group: group})
		publish(&nats.Msg{Subject: subjects.KVKeys(schema.BucketDevices) + sn, Data: b})

		session := sn + "-1"
		if online {
			b, _ = json.Marshal(hub.PresenceEntry{Node: node, Session: session, Since: since, LastSeen: now, Addr: "127.0.0.1:30000", Type: typ, Group: group})
			publish(&nats.Msg{Subject: subjects.KVKeys(hub.BucketPresence) + sn, Data: b})
		}
		rec := hub.PresenceRecord{SN: sn, Type: typ, Group: group, Online: online, Reason: hub.ReasonConnected, Node: node, At: since}
		id := sn + "/" + session + "/on"
		if !online {
			rec.Reason, id = hub.ReasonClosed, sn+"/"+session+"/off"
		}
		subj, err := subjects.Presence(sn)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = json.Marshal(rec)
		m := nats.NewMsg(subj)
		m.Data = b
		m.Header.Set(jetstream.MsgIDHeader, id)
		publish(m)

		st, _ := json.Marshal(status(i%5/4, "Aisle "+strconv.Itoa(i%40), i%7/6*2, "all sensors ok", i%11/10*3, "bin "+strconv.Itoa(i%100)+"%", i*37%101))
		subj, err = subjects.DeviceStatus(sn)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = json.Marshal(hub.StatusRecord{SN: sn, Type: typ, Group: group, At: now - int64(i%600)*1000, Status: st})
		publish(&nats.Msg{Subject: subj, Data: b})
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		t.Fatalf("the seed's publishes were not all acknowledged within 5 minutes (%d pending)", js.PublishAsyncPending())
	}
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of the seed's publishes failed", n)
	}
}
