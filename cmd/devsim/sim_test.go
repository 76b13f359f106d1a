package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func noEnv(string) (string, bool) { return "", false }

func TestSimulation(t *testing.T) {
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	cfg := Config{
		URLs: []string{n.WSURL()}, Devices: 4, Prefix: "SIM-", MasterSecret: hubtest.MasterSecret,
		StatusInterval: 200 * time.Millisecond, EventRate: 30, Logger: testLogger(t),
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		stats *simStats
		err   error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		s, err := simulate(ctx, cfg.withDefaults())
		done <- result{s, err}
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	natstest.Eventually(t, 10*time.Second, func() error {
		if c := n.Hub.SessionCount(); c != 4 {
			return fmt.Errorf("%d sessions, want 4", c)
		}
		return nil
	})

	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	var devs struct {
		Devices []struct {
			SN     string `json:"sn"`
			Type   string `json:"type"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		admin.MustOK("/admin/devices", map[string]any{"online": true}).Decode(t, &devs)
		online := map[string]string{}
		for _, d := range devs.Devices {
			if d.Online && strings.HasPrefix(d.SN, "SIM-") {
				online[d.SN] = d.Type
			}
		}
		if len(online) != 4 {
			return fmt.Errorf("online: %v", online)
		}
		for i, typ := range types {
			if sn := cfg.serial(i); online[sn] != typ {
				return fmt.Errorf("%s has type %q, want %q", sn, online[sn], typ)
			}
		}
		return nil
	})

	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"status"}})
	var rec struct {
		SN     string `json:"sn"`
		Status struct {
			Electricity struct {
				Code    *int     `json:"code"`
				Msg     string   `json:"msg"`
				Percent *float64 `json:"percent"`
			} `json:"electricity"`
			Location struct {
				Code *int   `json:"code"`
				Name string `json:"name"`
			} `json:"location"`
			Inspection struct {
				Code *int `json:"code"`
			} `json:"inspection"`
			Rubbish struct {
				Code *int `json:"code"`
			} `json:"rubbish"`
		} `json:"status"`
	}
	admin.Push("/push/status").Decode(t, &rec)
	st := rec.Status
	if !strings.HasPrefix(rec.SN, "SIM-") || st.Electricity.Code == nil || st.Electricity.Percent == nil ||
		st.Location.Code == nil || st.Location.Name == "" || st.Inspection.Code == nil || st.Rubbish.Code == nil {
		t.Fatalf("status record: %+v", rec)
	}

	// Commands: SIM-0001 is a retail robot of the mall-east site.
	var dance struct {
		Dancing    bool   `json:"dancing"`
		Routine    string `json:"routine"`
		DurationMS int64  `json:"duration_ms"`
	}
	admin.MustOK("/admin/command", map[string]any{
		"sn": "SIM-0001", "service": "/cmd/dance", "args": map[string]any{"routine": "wave", "duration_ms": 3000},
	}).Decode(t, &dance)
	if !dance.Dancing || dance.Routine != "wave" || dance.DurationMS != 3000 {
		t.Fatalf("/cmd/dance: %+v", dance)
	}
	var move struct {
		To    string `json:"to"`
		ETAMS *int64 `json:"eta_ms"`
	}
	admin.MustOK("/admin/command", map[string]any{
		"sn": "SIM-0001", "service": "/cmd/move", "args": map[string]any{"to": "Level 3 · food court"},
	}).Decode(t, &move)
	if move.To != "Level 3 · food court" || move.ETAMS == nil {
		t.Fatalf("/cmd/move: %+v", move)
	}
	admin.MustCode(400, "/admin/command", map[string]any{"sn": "SIM-0001", "service": "/cmd/move", "args": map[string]any{"to": "Mars"}})
	// "dock" is the robot's own dock, whatever its site calls it.
	admin.MustOK("/admin/command", map[string]any{
		"sn": "SIM-0001", "service": "/cmd/move", "args": map[string]any{"to": "dock"},
	}).Decode(t, &move)
	if move.To != "Level 1 · dock" {
		t.Fatalf(`/cmd/move {"to":"dock"}: %+v`, move)
	}
	admin.MustOK("/admin/command", map[string]any{"sn": "SIM-0004", "service": "/cmd/dock"})
	admin.MustOK("/admin/command", map[string]any{"sn": "SIM-0002", "service": "/cmd/stop"})
	if m := admin.MustCode(404, "/admin/command", map[string]any{"sn": "SIM-0002", "service": "/cmd/fly"}); m.Msg != "unknown command" {
		t.Fatalf("unknown command: msg %q", m.Msg)
	}
	admin.MustCode(409, "/admin/command", map[string]any{"sn": "SIM-0003", "service": "/cmd/busy"})

	// A push is reported back as a push_received event with its id.
	admin.MustOK("/admin/subscribe", map[string]any{"devices": []string{"SIM-0002"}, "topics": []string{"event"}})
	var pushed struct {
		ID string `json:"id"`
	}
	admin.MustOK("/admin/push", map[string]any{"target": map[string]any{"sn": "SIM-0002"}, "service": "/push/hello", "values": map[string]any{"text": "hi"}}).Decode(t, &pushed)
	admin.Next(func(m hubtest.Msg) bool {
		var ev struct {
			SN    string `json:"sn"`
			Event string `json:"event"`
			Data  struct {
				ID      string `json:"id"`
				Service string `json:"service"`
			} `json:"data"`
		}
		return m.Op == "push" && m.Service == "/push/event" && json.Unmarshal(m.Values, &ev) == nil &&
			ev.SN == "SIM-0002" && ev.Event == "push_received" && ev.Data.ID == pushed.ID && ev.Data.Service == "/push/hello"
	})

	// Run for about two seconds in all, then stop.
	time.Sleep(time.Until(start.Add(2 * time.Second)))
	cancel()
	var res result
	select {
	case res = <-done:
		stopped = true
	case <-time.After(10 * time.Second):
		t.Fatal("simulation did not stop within 10s of cancel")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	s := res.stats
	if s.Connects.Load() != 4 || s.Reports.Load() < 4 || s.ReportErrors.Load() != 0 || s.EventErrors.Load() != 0 || s.Commands.Load() < 7 {
		t.Fatalf("stats: %v", s.logAttrs())
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if c := n.Hub.SessionCount(); c != 1 {
			return fmt.Errorf("%d sessions left, want only the admin's", c)
		}
		return nil
	})
}

func TestSimulationDisconnects(t *testing.T) {
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	// 3600 per hour: a disconnect about every second per robot.
	cfg := Config{
		URLs: []string{n.WSURL()}, Devices: 2, Prefix: "SIMD-", MasterSecret: hubtest.MasterSecret,
		StatusInterval: 200 * time.Millisecond, DisconnectRate: 3600, Duration: 3 * time.Second, Logger: testLogger(t),
	}
	s, err := simulate(context.Background(), cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if s.SimDisconnects.Load() == 0 || s.Connects.Load() < 2 {
		t.Fatalf("stats: %v", s.logAttrs())
	}
}

func TestLoad(t *testing.T) {
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	cfg := Config{
		URLs: []string{n.WSURL()}, Devices: 50, Prefix: "LOAD-", MasterSecret: hubtest.MasterSecret,
		StatusInterval: 200 * time.Millisecond, Duration: time.Second, Load: true, Concurrency: 64,
		Logger: testLogger(t),
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	rep, err := runLoad(context.Background(), cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Connect
	if c.Connected != 50 || c.Failed != 0 || c.RatePerS <= 0 || c.LatencyMS.P50 <= 0 || c.LatencyMS.Max < c.LatencyMS.P99 {
		t.Fatalf("connect: %+v", c)
	}
	s := rep.Status
	if rep.Errors() != 0 || s.OK < 50 || s.OK != s.Sent || s.LatencyMS.P50 <= 0 || s.RatePerS <= 0 {
		t.Fatalf("status: %+v", s)
	}
	if got := n.Hub.SessionCount(); got != 0 {
		// runLoad closes its devices before returning; the hub may take a
		// moment to notice.
		natstest.Eventually(t, 5*time.Second, func() error {
			if c := n.Hub.SessionCount(); c != 0 {
				return fmt.Errorf("%d sessions left", c)
			}
			return nil
		})
	}

	var js bytes.Buffer
	if err := rep.write(&js, true); err != nil {
		t.Fatal(err)
	}
	var back LoadReport
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Connect.Connected != 50 {
		t.Fatalf("JSON report %s: %v", js.String(), err)
	}
	var txt bytes.Buffer
	if err := rep.write(&txt, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connect", "status", "p99", "errors: none"} {
		if !strings.Contains(txt.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, txt.String())
		}
	}
	t.Logf("report:\n%s", txt.String())
}

func TestLoadNoHub(t *testing.T) {
	cfg := Config{
		URLs: []string{"ws://127.0.0.1:1/ws"}, Devices: 3, Prefix: "LOAD-", MasterSecret: []byte("x"),
		StatusInterval: time.Second, Duration: time.Second, Load: true, Concurrency: 2,
	}
	rep, err := runLoad(context.Background(), cfg.withDefaults())
	if err == nil || rep.Connect.Failed != 3 || rep.Connect.Errors["refused"] != 3 {
		t.Fatalf("err %v, report %+v", err, rep.Connect)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--devices", "3"}, // no master secret
		{"--dev", "--devices", "0"},
		{"--dev", "--devices", "18001"},
		{"--dev", "--load", "--devices", "20000"},
		{"--dev", "--status-interval", "0"},
		{"--dev", "--event-rate", "-1"},
		{"--dev", "--url", "http://127.0.0.1:8080/ws"},
		{"--dev", "--prefix", "bad prefix "},
		{"--dev", "--load", "--concurrency", "0"},
		{"--dev", "--json"},
		{"--dev", "--log-level", "loud"},
		{"--dev", "extra"},
		{"--no-such-flag"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, noEnv, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, errb.String())
		} else if errb.Len() == 0 {
			t.Errorf("%q: nothing on stderr", args)
		}
	}
	var out, errb bytes.Buffer
	run(context.Background(), []string{"--dev", "--devices", "18001"}, noEnv, &out, &errb)
	if !strings.Contains(errb.String(), "at most 18000 devices") {
		t.Errorf("too many devices: %q", errb.String())
	}
	env := func(k string) (string, bool) {
		if k == "HUB_DEVICES" {
			return "0", true
		}
		return "", false
	}
	if code := run(context.Background(), []string{"--dev"}, env, &out, &errb); code != 2 {
		t.Errorf("HUB_DEVICES=0: exit %d, want 2", code)
	}
}

func TestPrintRegistry(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--print-registry", "--devices", "5"}, noEnv, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want := "hubctl device add SIM-0001 --type retail --group mall-east\n" +
		"hubctl device add SIM-0002 --type dance_robot --group theater\n" +
		"hubctl device add SIM-0003 --type dance_dog --group theater\n" +
		"hubctl device add SIM-0004 --type rubbish --group depot\n" +
		"hubctl device add SIM-0005 --type retail --group mall-west\n"
	if out.String() != want {
		t.Fatalf("got:\n%s", out.String())
	}
}

func TestSerials(t *testing.T) {
	c := Config{Prefix: "SIM-", Devices: 12}
	if c.serial(0) != "SIM-0001" || c.serial(11) != "SIM-0012" {
		t.Fatal(c.serial(0), c.serial(11))
	}
	c.Devices = 18000
	if c.serial(17999) != "SIM-18000" || c.serial(0) != "SIM-00001" {
		t.Fatal(c.serial(0), c.serial(17999))
	}
	c.URLs = []string{"a", "b", "c"}
	if got := c.urlsFor(4); strings.Join(got, ",") != "b,c,a" {
		t.Fatal(got)
	}
}

func TestRobotDrift(t *testing.T) {
	now := time.Now()
	r := newRobot(3, "SIM-0004", now) // rubbish
	if r.typ != typeRubbish {
		t.Fatalf("type %q", r.typ)
	}
	r.battery, r.fill, r.activity, r.docked = 50, 89, actWorking, false
	r.locLost = time.Time{}
	st, evs := r.status(now.Add(10 * time.Second))
	if !hasEvent(evs, "bin_full") {
		t.Fatalf("no bin_full event: %+v", evs)
	}
	rub := st["rubbish"].(map[string]any)
	if rub["code"] != 3 || rub["msg"] != "bin full" {
		t.Fatalf("rubbish: %v", rub)
	}
	if r.activity != actMoving || r.target != r.site.dock {
		t.Fatalf("a full robot should head to its dock: %s %s", r.activity, r.target)
	}
	// At the dock the bin is emptied and the robot charges.
	_, evs = r.status(r.arrive.Add(time.Second))
	if !hasEvent(evs, "bin_emptied") || r.fill != 0 || r.activity != actCharging {
		t.Fatalf("at the dock: %+v fill %v activity %s", evs, r.fill, r.activity)
	}

	// A draining robot reports low battery, raises one event and docks.
	r = newRobot(0, "SIM-0001", now)
	r.battery, r.activity, r.docked, r.lowSent = 21, actWorking, false, false
	st, evs = r.status(now.Add(30 * time.Second))
	elec := st["electricity"].(map[string]any)
	if elec["code"] != 1 || !hasEvent(evs, "low_battery") {
		t.Fatalf("electricity %v, events %+v", elec, evs)
	}
	_, evs = r.status(now.Add(31 * time.Second))
	if hasEvent(evs, "low_battery") {
		t.Fatal("low_battery raised twice")
	}
}

func TestRandomEventPriorities(t *testing.T) {
	r := newRobot(1, "SIM-0002", time.Now())
	counts := map[string]int{}
	for range 20000 {
		ev := r.randomEvent()
		if ev.name == "" || len(ev.name) > 64 {
			t.Fatalf("event name %q", ev.name)
		}
		counts[ev.priority]++
	}
	near := func(p string, want float64) {
		got := float64(counts[p]) / 20000
		if got < want*0.8 || got > want*1.2 {
			t.Errorf("%s: %.3f of events, want about %.2f", p, got, want)
		}
	}
	near("normal", 0.80)
	near("high", 0.17)
	near("emergency", 0.03)
}

func hasEvent(evs []event, name string) bool {
	for _, ev := range evs {
		if ev.name == name {
			return true
		}
	}
	return false
}
