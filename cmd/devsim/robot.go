package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/client"
)

// Device types, as the seed documents name them.
const (
	typeRetail     = "retail"
	typeDanceRobot = "dance_robot"
	typeDanceDog   = "dance_dog"
	typeRubbish    = "rubbish"
)

// types is the order robots are spread over: robot i has types[i%4].
var types = []string{typeRetail, typeDanceRobot, typeDanceDog, typeRubbish}

// site is where a group of robots works: its locations and its dock.
type site struct {
	group     string
	locations []string
	dock      string
}

// sites lists, per type, the sites robots of that type are spread over.
// The group is what `hubctl device add --group` would register (the hub
// puts an unregistered device in group "default").
var sites = map[string][]site{
	typeRetail: {
		{"mall-east", []string{"Level 1 · entrance", "Level 2 · entrance", "Level 2 · electronics", "Level 3 · food court"}, "Level 1 · dock"},
		{"mall-west", []string{"Level 1 · lobby", "Level 2 · fashion", "Level 3 · cinema"}, "Level 1 · service dock"},
	},
	typeDanceRobot: {
		{"theater", []string{"Stage A", "Stage B", "Backstage", "Foyer"}, "Green room dock"},
	},
	typeDanceDog: {
		{"theater", []string{"Stage A", "Plaza", "Lobby"}, "Kennel dock"},
		{"park", []string{"Fountain", "Lawn", "Playground"}, "Kiosk dock"},
	},
	typeRubbish: {
		{"depot", []string{"Hall 1", "Hall 2", "Corridor C", "Loading bay"}, "Dock 3"},
	},
}

// Activities of a robot.
const (
	actWorking  = "working"
	actMoving   = "moving"
	actDancing  = "dancing"
	actCharging = "charging"
	actIdle     = "idle"
)

// Drift of the simulated robots, per second.
const (
	drainWorking = 0.04 // % of battery
	drainMoving  = 0.08
	drainDancing = 0.12
	chargeRate   = 0.4
	fillRate     = 0.15 // % of the bin, rubbish robots at work

	lowBattery   = 20.0 // below: electricity code 1
	dockBattery  = 15.0 // below: the robot goes to its dock on its own
	fullBattery  = 95.0 // above: a charging robot goes back to work
	binFull      = 90.0 // from: rubbish code 3
	meanDwell    = 45.0 // seconds a working robot stays at a location, on average
	meanFaultGap = 1800.0
)

// fault is an inspection or location fault.
type fault struct {
	code int
	msg  string
}

var inspectionFaults = []fault{
	{2, "left camera occluded"},
	{2, "right camera occluded"},
	{3, "lidar window dirty"},
	{4, "wheel slip detected"},
}

// robot is one simulated device: its identity and its drifting state. The
// state is read and changed by the robot's own loop (reports) and by the
// SDK's command goroutines, hence the lock.
type robot struct {
	sn, typ string
	site    site

	mu        sync.Mutex
	last      time.Time // when the state was last advanced
	battery   float64
	fill      float64 // rubbish bin, %
	location  string
	activity  string
	target    string    // where a moving robot goes
	arrive    time.Time // when it gets there
	danceEnd  time.Time
	routine   string
	docked    bool // charging at the dock
	stayDock  bool // docked on command: stay until told otherwise
	insp      fault
	inspUntil time.Time
	locLost   time.Time // until when localization is lost (zero: fine)
	lowSent   bool      // a low_battery event was raised for this discharge
	binSent   bool      // a bin_full event was raised for this fill
}

// kind returns the type and site of robot i: types in turn, and the sites
// of a type in turn.
func kind(i int) (string, site) {
	typ := types[i%len(types)]
	ss := sites[typ]
	return typ, ss[(i/len(types))%len(ss)]
}

// newRobot makes robot i of the fleet with a random starting state.
func newRobot(i int, sn string, now time.Time) *robot {
	typ, s := kind(i)
	r := &robot{
		sn: sn, typ: typ, site: s, last: now,
		battery:  18 + rand.Float64()*82,
		location: s.locations[rand.IntN(len(s.locations))],
		activity: actWorking,
	}
	if typ == typeRubbish {
		r.fill = rand.Float64() * 80
	}
	if r.battery < dockBattery {
		r.location, r.activity, r.docked = s.dock, actCharging, true
	}
	return r
}

// event is an event to report.
type event struct {
	name, priority string
	data           map[string]any
}

// step advances the robot's state to now and returns the events its
// changes raise (low battery, bin full, a fault). Called with mu held.
func (r *robot) step(now time.Time) []event {
	dt := now.Sub(r.last).Seconds()
	r.last = now
	if dt <= 0 {
		return nil
	}
	var evs []event
	// Finish what was under way.
	if r.activity == actMoving && !now.Before(r.arrive) {
		r.location, r.target = r.target, ""
		r.activity = actWorking
		if r.location == r.site.dock {
			r.activity, r.docked = actCharging, true
			if r.typ == typeRubbish && r.fill > 0 {
				evs = append(evs, event{"bin_emptied", "normal", map[string]any{"fill": math.Round(r.fill), "dock": r.site.dock}})
				r.fill, r.binSent = 0, false
			}
		}
	}
	if r.activity == actDancing && !now.Before(r.danceEnd) {
		r.activity, r.routine = actWorking, ""
	}
	// Battery.
	switch r.activity {
	case actCharging:
		r.battery = math.Min(100, r.battery+chargeRate*dt)
	case actMoving:
		r.battery -= drainMoving * dt
	case actDancing:
		r.battery -= drainDancing * dt
	default:
		r.battery -= drainWorking * dt
	}
	r.battery = math.Max(0, r.battery)
	if r.battery < lowBattery && !r.lowSent && r.activity != actCharging {
		r.lowSent = true
		evs = append(evs, event{"low_battery", "high", map[string]any{"percent": math.Round(r.battery)}})
	}
	if r.battery >= lowBattery+5 {
		r.lowSent = false
	}
	// Rubbish bin.
	if r.typ == typeRubbish && r.activity == actWorking {
		r.fill = math.Min(100, r.fill+fillRate*dt)
		if r.fill >= binFull && !r.binSent {
			r.binSent = true
			evs = append(evs, event{"bin_full", "high", map[string]any{"fill": math.Round(r.fill), "location": r.location}})
		}
	}
	// Faults come rarely and clear on their own.
	if r.insp.code != 0 && now.After(r.inspUntil) {
		r.insp = fault{}
	}
	if r.insp.code == 0 && chance(dt/meanFaultGap) {
		r.insp = inspectionFaults[rand.IntN(len(inspectionFaults))]
		r.inspUntil = now.Add(jitterRange(10*time.Second, 90*time.Second))
		evs = append(evs, event{"abnormal", "high", map[string]any{"inspection_code": r.insp.code, "msg": r.insp.msg}})
	}
	if r.locLost.IsZero() && chance(dt/(2*meanFaultGap)) {
		r.locLost = now.Add(jitterRange(5*time.Second, 20*time.Second))
	} else if !r.locLost.IsZero() && now.After(r.locLost) {
		r.locLost = time.Time{}
	}
	// Decide what to do next.
	switch {
	case r.activity == actCharging:
		if r.battery >= fullBattery && !r.stayDock {
			r.moveTo(now, r.randomLocation())
		}
	case r.activity != actMoving && (r.battery < dockBattery || r.typ == typeRubbish && r.fill >= binFull):
		r.moveTo(now, r.site.dock)
	case r.activity == actWorking && chance(dt/meanDwell):
		r.moveTo(now, r.randomLocation())
	case r.activity == actIdle && chance(dt/meanDwell):
		r.activity = actWorking // stopped robots go back to work after a while
	}
	return evs
}

// moveTo sends the robot on its way and returns how long it takes.
// Called with mu held.
func (r *robot) moveTo(now time.Time, to string) time.Duration {
	if to == r.location && r.activity != actMoving {
		return 0
	}
	eta := jitterRange(4*time.Second, 20*time.Second)
	r.activity, r.target, r.arrive = actMoving, to, now.Add(eta)
	r.docked, r.routine = false, ""
	if to != r.site.dock {
		r.stayDock = false
	}
	return eta
}

func (r *robot) randomLocation() string {
	for {
		l := r.site.locations[rand.IntN(len(r.site.locations))]
		if l != r.location || len(r.site.locations) == 1 {
			return l
		}
	}
}

// status advances the state and returns the status to report with the
// events the changes raise.
func (r *robot) status(now time.Time) (map[string]any, []event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.step(now)
	pct := math.Round(r.battery)
	elec := map[string]any{"code": 0, "msg": "ok", "percent": pct, "charging": r.activity == actCharging}
	if r.battery < lowBattery {
		elec["code"], elec["msg"] = 1, "low battery"
	}
	loc := map[string]any{"code": 0, "msg": "ok", "name": r.location, "site": r.site.group}
	if r.activity == actMoving {
		loc["msg"], loc["target"] = "moving to "+r.target, r.target
		loc["eta_ms"] = max(0, r.arrive.Sub(now).Milliseconds())
	}
	if !r.locLost.IsZero() {
		loc["code"], loc["msg"] = 1, "localization lost, relocalizing"
	}
	insp := map[string]any{"code": r.insp.code, "msg": "ok"}
	if r.insp.code != 0 {
		insp["msg"] = r.insp.msg
	}
	var rub map[string]any
	if r.typ == typeRubbish {
		rub = map[string]any{"code": 0, "msg": "ok", "fill": math.Round(r.fill)}
		if r.fill >= binFull {
			rub["code"], rub["msg"] = 3, "bin full"
		}
	} else {
		rub = map[string]any{"code": 0, "msg": "no rubbish detected"}
	}
	st := map[string]any{
		"location": loc, "inspection": insp, "rubbish": rub, "electricity": elec,
		"activity": r.activity,
	}
	if r.activity == actDancing {
		st["routine"] = r.routine
	}
	return st, evs
}

// Random events: names by priority, some type-specific.
var (
	normalEvents = []string{"routine_started", "routine_finished", "door_opened", "threshold", "patrol_done"}
	highEvents   = []string{"abnormal", "threshold", "obstacle_blocked", "door_opened"}
	emergEvents  = []string{"abnormal", "emergency_stop_pressed", "collision"}
	typeEvents   = map[string][]string{
		typeRetail:     {"customer_greeted", "shelf_empty"},
		typeDanceRobot: {"routine_started", "music_lost"},
		typeDanceDog:   {"routine_started", "fall_detected"},
		typeRubbish:    {"bin_full", "spill_detected"},
	}
)

// randomEvent picks an event at random: about 80% normal, 17% high and 3%
// emergency.
func (r *robot) randomEvent() event {
	r.mu.Lock()
	loc, pct := r.location, math.Round(r.battery)
	r.mu.Unlock()
	var ev event
	switch p := rand.Float64(); {
	case p < 0.03:
		ev = event{pick(emergEvents), "emergency", nil}
	case p < 0.20:
		ev = event{pick(highEvents), "high", nil}
	default:
		names := normalEvents
		if extra := typeEvents[r.typ]; rand.IntN(3) == 0 {
			names = extra
		}
		ev = event{pick(names), "normal", nil}
	}
	ev.data = map[string]any{"location": loc, "battery": pct}
	switch ev.name {
	case "threshold":
		ev.data["metric"], ev.data["value"], ev.data["limit"] = "motor_temp_c", 70+rand.IntN(15), 70
	case "abnormal":
		ev.data["reason"] = pick([]string{"unexpected stop", "arm torque high", "network jitter"})
	case "door_opened":
		ev.data["door"] = pick([]string{"service hatch", "battery bay"})
	case "routine_started", "routine_finished":
		ev.data["routine"] = pick(routines(r.typ))
	}
	return ev
}

func routines(typ string) []string {
	switch typ {
	case typeDanceRobot:
		return []string{"robot walk", "wave", "moonwalk"}
	case typeDanceDog:
		return []string{"sit and spin", "paw wave", "tail chase"}
	case typeRubbish:
		return []string{"sweep hall", "collect bins"}
	}
	return []string{"greeting", "shelf scan", "patrol"}
}

// handle answers a command. ctx ends with the connection it came on.
func (r *robot) handle(ctx context.Context, cmd client.Command) client.Result {
	// A real robot takes a moment to act.
	if !sleepCtx(ctx, jitterRange(5*time.Millisecond, 40*time.Millisecond)) {
		return client.Result{Code: 503, Msg: "connection lost"}
	}
	var args map[string]any
	if len(cmd.Args) > 0 {
		if err := json.Unmarshal(cmd.Args, &args); err != nil {
			return client.Result{Code: 400, Msg: "args: must be an object"}
		}
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.step(now) // the events of the step come with the next report
	switch cmd.Service {
	case "/cmd/dance":
		return r.dance(now, args)
	case "/cmd/move":
		return r.move(now, args)
	case "/cmd/dock":
		pct := math.Round(r.battery)
		if r.docked {
			r.stayDock = true
			return ok(map[string]any{"docked": true, "dock": r.site.dock, "eta_ms": 0, "percent": pct})
		}
		eta := r.moveTo(now, r.site.dock)
		r.stayDock = true
		return ok(map[string]any{"docked": false, "docking": true, "dock": r.site.dock, "eta_ms": eta.Milliseconds(), "percent": pct})
	case "/cmd/stop":
		was := r.activity
		switch r.activity {
		case actMoving, actDancing:
			r.activity, r.target, r.routine = actIdle, "", ""
		}
		return ok(map[string]any{"stopped": true, "was": was, "location": r.location})
	case "/cmd/busy":
		return client.Result{Code: 409, Msg: "busy: " + r.activity, Values: map[string]any{"activity": r.activity}}
	}
	if strings.HasPrefix(cmd.Service, "/cmd/") {
		return client.Result{Code: 404, Msg: "unknown command"}
	}
	return client.Result{Code: 404, Msg: "unknown service"}
}

func (r *robot) dance(now time.Time, args map[string]any) client.Result {
	routine := pick(routines(r.typ))
	if v, present := args["routine"]; present {
		s, isStr := v.(string)
		if !isStr || s == "" || len(s) > 64 {
			return client.Result{Code: 400, Msg: "args.routine: must be a string of 1 to 64 characters"}
		}
		routine = s
	}
	dur := 15 * time.Second
	if v, present := args["duration_ms"]; present {
		f, isNum := v.(float64)
		if !isNum || f < 1000 || f > 600000 || f != math.Trunc(f) {
			return client.Result{Code: 400, Msg: "args.duration_ms: must be an integer from 1000 to 600000"}
		}
		dur = time.Duration(f) * time.Millisecond
	}
	if r.battery < 10 {
		return client.Result{Code: 409, Msg: "battery too low to dance", Values: map[string]any{"percent": math.Round(r.battery)}}
	}
	r.activity, r.routine, r.danceEnd = actDancing, routine, now.Add(dur)
	r.target, r.docked, r.stayDock = "", false, false
	return ok(map[string]any{"dancing": true, "routine": routine, "duration_ms": dur.Milliseconds(), "location": r.location})
}

// dockAlias is the destination of /cmd/move that means the robot's own
// dock, whatever its site calls it: what a reader types first.
const dockAlias = "dock"

func (r *robot) move(now time.Time, args map[string]any) client.Result {
	v, present := args["to"]
	if !present {
		return client.Result{Code: 400, Msg: "args.to: missing"}
	}
	to, isStr := v.(string)
	if !isStr {
		return client.Result{Code: 400, Msg: "args.to: must be a string"}
	}
	if to == dockAlias {
		to = r.site.dock
	}
	if to != r.site.dock && !slices.Contains(r.site.locations, to) {
		return client.Result{Code: 400, Msg: fmt.Sprintf("args.to: unknown location %q (known: %s, %s, or %q for the robot's own dock)",
			to, strings.Join(r.site.locations, ", "), r.site.dock, dockAlias)}
	}
	if r.battery < 5 && to != r.site.dock {
		return client.Result{Code: 409, Msg: "battery too low, dock first", Values: map[string]any{"percent": math.Round(r.battery)}}
	}
	from := r.location
	eta := r.moveTo(now, to)
	return ok(map[string]any{"moving": eta > 0, "from": from, "to": to, "eta_ms": eta.Milliseconds()})
}

func ok(values map[string]any) client.Result { return client.Result{Values: values} }

// chance reports true with probability p.
func chance(p float64) bool { return rand.Float64() < p }

func pick(s []string) string { return s[rand.IntN(len(s))] }

// jitterRange returns a random duration in [lo, hi).
func jitterRange(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// jittered returns d ±20%.
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// expDelay returns the wait until the next event of a Poisson process
// with the given mean interval, capped so timers stay sane.
func expDelay(mean time.Duration) time.Duration {
	d := time.Duration(rand.ExpFloat64() * float64(mean))
	return min(max(d, time.Millisecond), 1000*time.Hour)
}

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
