package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// PartitionOptions shapes RunPartition.
type PartitionOptions struct {
	Topology Topology // default TopologyLeaf
	// Hub is the hub binary (BuildHub).
	Hub string
	// Devices per data centre (default 20).
	Devices int
	// Delay is the WAN delay each way (default 40 ms).
	Delay time.Duration
	// Cut is how long the WAN stays cut (default 5 s).
	Cut time.Duration
	// ReportEvery is each device's status period (default 1 s).
	ReportEvery time.Duration
	// Commands is how many commands each admin sends to devices of each
	// data centre while connected (default 20).
	Commands int
	// Silent makes the cut a silent one (wanproxy Blackhole: nothing
	// closed, nothing passes), which the servers see only through their
	// pings; otherwise every WAN connection closes and new ones are
	// refused.
	Silent bool
}

// Bounds of the partition scenario.
const (
	// ConvergeLimit is the guarantee: after a heal every data centre's
	// device listing shows every device online within it (PROTOCOL §8).
	ConvergeLimit = 10 * time.Second
	// ReplayLimit: a nonce used in one data centre is refused in the
	// other within it while they are connected.
	ReplayLimit = time.Second
	// convergeWait bounds the waits for a listing, a view or a stream to
	// catch up (past a limit the figure still says how long it took).
	convergeWait = 60 * time.Second
)

// replayLadder are the delays after which a nonce accepted in one data
// centre is sent to the other; the last is ReplayLimit.
var replayLadder = []time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, ReplayLimit}

// DCFigures are what the scenario measured in one data centre: of its
// devices, its admin and its stores.
type DCFigures struct {
	Name    string
	Devices int
	// Connect + device auth of the fleet (before the cut), and of new
	// devices during the cut.
	ConnectP50, ConnectP99, CutConnect time.Duration
	LoneConnectP50                     time.Duration // connect + auth one at a time, p50 of 10
	// Status reports acknowledged, acknowledgement times (all, and of
	// reports sent during the cut), answers by code other than 0.
	StatusAcked                   int
	StatusP50, StatusP99          time.Duration
	CutStatusP99                  time.Duration
	StatusCodes                   map[int]int
	StatusUnanswered              int
	CmdOwnP50, CmdOwnP99          time.Duration // this DC's admin, this DC's devices
	CmdCrossP50, CmdCrossP99      time.Duration // this DC's admin, the other DC's devices
	CmdFailed                     int           // commands that failed while connected
	PushesMissed                  int           // pushes (own and cross) not delivered while connected
	ReplayRefusedFrom             time.Duration // from this ladder delay on, the other DC refused this DC's nonces (-1: never)
	ReplayAccepted                int           // ladder probes of this DC's nonces the other DC accepted (too early)
	CutCrossCodes                 map[int]int   // answers to commands for the other DC's devices during the cut
	CutCrossPush                  int           // the answer to a push to a device of the other DC during the cut
	Converge                      time.Duration // heal to a complete listing here (-1: never)
	StatusLostOwn, StatusLostView int           // acknowledged records missing from this DC's own stream, and from the other DC's view
	FalseOffline, NodeLost        int
	SessionsEnded                 int
}

// PartitionResult is the outcome of RunPartition.
type PartitionResult struct {
	Topology   Topology
	Delay, Cut time.Duration
	Silent     bool
	DCs        [2]DCFigures
	// Problems are the guarantees that did not hold, one line each.
	Problems []string
}

// dcScene is one data centre of the running scenario.
type dcScene struct {
	name    string
	hub     *Hub
	nc      *nats.Conn
	js      jetstream.JetStream
	admin   *hubtest.Client
	devices []*dcDevice
	fig     *DCFigures
	// Presence pushes the admin received, in order.
	presence []hub.PresenceRecord
	connect  []time.Duration
	// Commands and pushes while connected: round trips by target DC.
	rtt [2][]time.Duration
}

type partition struct {
	t       testing.TB
	o       PartitionOptions
	servers *DCServers
	dcs     [2]*dcScene
	res     *PartitionResult
	stop    chan struct{}
	wg      sync.WaitGroup
	// Owned by the test goroutine.
	cutAt, healAt time.Time
	haltAt        int64 // when the devices were stopped, in ms: later records are theirs
	// cutAuth[i] was used in data centre i during the cut: after the
	// heal the other one must refuse it.
	cutAuth [2]*DeviceAuth
	// crossed are the replay probes the other data centre accepted too
	// (before the nonce reached it): devices with a session in both data
	// centres at once, whose merged history does not alternate (each data
	// centre judges only its own; docs/topologies.md, layout).
	crossed map[string]bool
}

func (p *partition) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.res.Problems = append(p.res.Problems, msg)
	p.t.Logf("problem: %s", msg)
}

// RunPartition runs the scenario of two data centres on the shipped
// configuration files of o.Topology: servers from the files, a hub node
// process on each data centre's server (--nats-url; its data centre is
// what that server says), o.Devices devices and an admin on each over
// real WebSockets, o.Delay each way between them. It measures connect,
// status and command times, cross-DC replay refusal, then cuts the WAN
// for o.Cut and checks that each data centre keeps serving its own
// devices, heals it and measures how long each data centre's listing
// takes to show every device online, and checks the stores: presence
// histories alternate, no false offline or node_lost, no acknowledged
// status record missing from its own data centre's stream or the other's
// view. What does not hold is in Problems; the test decides whether that
// fails it.
func RunPartition(t testing.TB, o PartitionOptions) PartitionResult {
	t.Helper()
	if o.Topology == "" {
		o.Topology = TopologyLeaf
	}
	if o.Devices == 0 {
		o.Devices = 20
	}
	if o.Delay == 0 {
		o.Delay = 40 * time.Millisecond
	}
	if o.Cut == 0 {
		o.Cut = 5 * time.Second
	}
	if o.ReportEvery == 0 {
		o.ReportEvery = time.Second
	}
	if o.Commands == 0 {
		o.Commands = 20
	}
	res := &PartitionResult{Topology: o.Topology, Delay: o.Delay, Cut: o.Cut, Silent: o.Silent}
	p := &partition{t: t, o: o, res: res, stop: make(chan struct{}), crossed: map[string]bool{}}
	p.start()
	p.connected()
	p.partitioned()
	p.healed()
	p.stores()
	return *res
}

// start brings up the servers, the hubs, the admins and the fleets.
func (p *partition) start() {
	t := p.t
	p.servers = StartDCServers(t, p.o.Topology, p.o.Delay)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i, name := range DCNames {
		d := &dcScene{name: name, fig: &p.res.DCs[i]}
		d.fig.Name, d.fig.StatusCodes, d.fig.CutCrossCodes = name, map[int]int{}, map[int]int{}
		h, err := StartHub(ctx, p.o.Hub, "--nats-url", p.servers.Servers[i].URL(), "--node-id", "hub-"+name,
			"--status-history", "100000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("hub-%s log tail:\n%s", name, h.LogTail(6000))
			}
			_ = h.Stop()
		})
		d.hub = h
		nc, err := nats.Connect(p.servers.Servers[i].URL(), nats.Name("partition-"+name), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		d.nc = nc
		if d.js, err = jetstream.New(nc); err != nil {
			t.Fatal(err)
		}
		p.dcs[i] = d
	}
	for _, d := range p.dcs {
		if _, err := d.hub.WaitReadiness(ctx, true); err != nil {
			t.Fatalf("hub-%s: %v\n%s", d.name, err, d.hub.LogTail(4000))
		}
		d.admin = hubtest.Dial(t, d.hub.WSURL, nil)
		d.admin.MustOK("/auth/login", map[string]any{"username": "admin", "password": "admin"})
		d.admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence"}})
	}
	// Both fleets at once, 8 dials at a time in each.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, d := range p.dcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.dialFleet(ctx, i, d)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range p.dcs {
		d.fig.Devices = len(d.devices)
		d.fig.ConnectP50, d.fig.ConnectP99 = Percentile(d.connect, 50), Percentile(d.connect, 99)
		for j, dev := range d.devices {
			p.runDevice(dev, time.Duration(j)*p.o.ReportEvery/time.Duration(len(d.devices)))
		}
	}
	t.Cleanup(p.halt)
	if p.o.Topology == TopologySupercluster {
		t.Logf("placement: %s", placement(ctx, p.dcs[0].js))
		p.checkPlacement(ctx)
	}
}

// checkPlacement: in a supercluster every data centre's own stores live
// in that data centre's cluster (so its connects and reports stay local).
func (p *partition) checkPlacement(ctx context.Context) {
	for _, d := range p.dcs {
		l := schema.Layout{DC: d.name}
		for _, name := range []string{"KV_" + l.Presence(), "KV_" + l.Nodes(), "KV_" + l.Nonces(), "KV_" + l.NoncesSeen(),
			l.StatusStream(), l.EventStream(), l.PresenceStream()} {
			st, err := p.dcs[0].js.Stream(ctx, name)
			switch {
			case err != nil:
				p.problem("stream %s: %v", name, err)
			case st.CachedInfo().Cluster == nil || st.CachedInfo().Cluster.Name != d.name:
				p.problem("stream %s of data centre %s is placed in %+v", name, d.name, st.CachedInfo().Cluster)
			}
		}
	}
}

// placement lists where each stream of one JetStream lives (its cluster,
// and its leader), in name order: in a supercluster what a data centre
// reaches without crossing the WAN.
func placement(ctx context.Context, js jetstream.JetStream) string {
	var out []string
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			out = append(out, name+": "+err.Error())
			continue
		}
		where := "?"
		if cl := st.CachedInfo().Cluster; cl != nil {
			where = cl.Name + "/" + cl.Leader
		}
		out = append(out, name+" "+where)
	}
	if err := names.Err(); err != nil {
		out = append(out, err.Error())
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func (p *partition) dialFleet(ctx context.Context, i int, d *dcScene) error {
	type got struct {
		dev  *dcDevice
		took time.Duration
		err  error
	}
	next := make(chan int)
	out := make(chan got)
	var wg sync.WaitGroup
	for range min(8, p.o.Devices) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				sn := fmt.Sprintf("%s-%04d", strings.ToUpper(d.name), j)
				dev, took, err := dialDCDevice(ctx, d.hub.WSURL, sn, i)
				out <- got{dev, took, err}
			}
		}()
	}
	go func() {
		for j := range p.o.Devices {
			next <- j
		}
		close(next)
		wg.Wait()
		close(out)
	}()
	var first error
	for g := range out {
		if g.err != nil {
			if first == nil {
				first = g.err
			}
			continue
		}
		d.devices = append(d.devices, g.dev)
		d.connect = append(d.connect, g.took)
	}
	sort.Slice(d.devices, func(a, b int) bool { return d.devices[a].sn < d.devices[b].sn })
	if first != nil {
		for _, dev := range d.devices {
			_ = dev.conn.Close()
		}
	}
	return first
}

// dialDCDevice connects and authenticates one device with a fresh nonce.
func dialDCDevice(ctx context.Context, wsURL, sn string, dc int) (*dcDevice, time.Duration, error) {
	conn, code, took, err := AuthDevice(ctx, wsURL, SignDevice(sn, nuid.Next()))
	if err != nil {
		return nil, 0, err
	}
	if code != 0 {
		return nil, 0, fmt.Errorf("loadtest: %s: auth answered %d", sn, code)
	}
	return newDCDevice(sn, dc, conn), took, nil
}

func (p *partition) runDevice(dev *dcDevice, offset time.Duration) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		dev.run(p.stop, offset, p.o.ReportEvery)
	}()
}

// halt stops every device and waits for them. Safe to call twice.
func (p *partition) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

// expected is every device of both data centres that should be online.
func (p *partition) expected() map[string]bool {
	m := map[string]bool{}
	for _, d := range p.dcs {
		for _, dev := range d.devices {
			m[dev.sn] = true
		}
	}
	return m
}

// online lists the devices d's admin sees online (every page).
func (d *dcScene) online() (map[string]bool, error) {
	seen := map[string]bool{}
	args := map[string]any{"online": true, "limit": 10000}
	for range 100 {
		m := d.admin.Request("/admin/devices", args)
		if m.Code != 0 {
			return nil, fmt.Errorf("/admin/devices in %s: %d %s", d.name, m.Code, m.Msg)
		}
		var v struct {
			Devices []struct {
				SN     string `json:"sn"`
				Online bool   `json:"online"`
			} `json:"devices"`
			Next string `json:"next"`
		}
		if err := json.Unmarshal(m.Values, &v); err != nil {
			return nil, err
		}
		for _, dv := range v.Devices {
			if dv.Online {
				seen[dv.SN] = true
			}
		}
		if v.Next == "" {
			return seen, nil
		}
		args = map[string]any{"cursor": v.Next}
	}
	return nil, fmt.Errorf("/admin/devices in %s: more than 100 pages", d.name)
}

// awaitListing polls d's listing until every device of want is online in
// it; it returns how long that took, or -1 after limit.
func (d *dcScene) awaitListing(want map[string]bool, limit time.Duration) (time.Duration, string) {
	begin := time.Now()
	var last string
	for time.Since(begin) < limit {
		seen, err := d.online()
		if err != nil {
			last = err.Error()
		} else {
			missing := 0
			example := ""
			for sn := range want {
				if !seen[sn] {
					missing++
					example = sn
				}
			}
			if missing == 0 {
				return time.Since(begin), ""
			}
			last = fmt.Sprintf("%d of %d devices not online in the listing (%s, for one)", missing, len(want), example)
		}
		time.Sleep(100 * time.Millisecond) // the poll period
	}
	return -1, last
}

// command sends /admin/command from d's admin to sn; it returns the code
// and the round trip.
func (d *dcScene) command(sn string) (int, time.Duration) {
	begin := time.Now()
	m := d.admin.Request("/admin/command", map[string]any{"sn": sn, "service": "/cmd/ping", "timeout_ms": 3000})
	return m.Code, time.Since(begin)
}

// push sends /admin/push from d's admin to dev and reports whether dev
// received it within 5 s.
func (d *dcScene) push(dev *dcDevice) (bool, string) {
	m := d.admin.Request("/admin/push", map[string]any{"target": map[string]any{"sn": dev.sn}, "service": "/push/partition", "values": map[string]any{}})
	if m.Code != 0 {
		return false, fmt.Sprintf("code %d %s", m.Code, m.Msg)
	}
	var v struct{ ID string }
	_ = json.Unmarshal(m.Values, &v)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if dev.gotPush(v.ID) {
			return true, ""
		}
		time.Sleep(10 * time.Millisecond) // the poll period
	}
	return false, "not delivered within 5s"
}

// drainPresence takes the presence pushes d's admin has received.
func (d *dcScene) drainPresence() {
	for {
		m, ok := d.admin.TryPush("/push/presence", 0)
		if !ok {
			return
		}
		var r hub.PresenceRecord
		if json.Unmarshal(m.Values, &r) == nil {
			d.presence = append(d.presence, r)
		}
	}
}

// connected measures, with the WAN up: the first convergence, command
// round trips and pushes within and across data centres, and cross-DC
// replay refusal.
func (p *partition) connected() {
	want := p.expected()
	for _, d := range p.dcs {
		if took, why := d.awaitListing(want, convergeWait); took < 0 {
			p.problem("before the cut, the listing in %s did not show every device online within %v: %s", d.name, convergeWait, why)
		}
	}
	for k := range p.o.Commands {
		for _, d := range p.dcs {
			for target := range 2 {
				devs := p.dcs[target].devices
				dev := devs[k%len(devs)]
				code, rtt := d.command(dev.sn)
				if code != 0 {
					d.fig.CmdFailed++
					p.problem("command from %s to %s (%s) answered %d while connected", d.name, dev.sn, p.dcs[target].name, code)
					continue
				}
				d.rtt[target] = append(d.rtt[target], rtt)
			}
		}
	}
	for i, d := range p.dcs {
		d.fig.CmdOwnP50, d.fig.CmdOwnP99 = Percentile(d.rtt[i], 50), Percentile(d.rtt[i], 99)
		d.fig.CmdCrossP50, d.fig.CmdCrossP99 = Percentile(d.rtt[1-i], 50), Percentile(d.rtt[1-i], 99)
		for target := range 2 {
			dev := p.dcs[target].devices[0]
			if ok, why := d.push(dev); !ok {
				d.fig.PushesMissed++
				p.problem("push from %s's admin to %s while connected: %s", d.name, dev.sn, why)
			}
		}
	}
	for i, d := range p.dcs {
		d.fig.ReplayRefusedFrom = p.replayLadder(d, p.dcs[1-i])
	}
	// Connects one at a time, with nothing else connecting: what one
	// costs without queueing behind others (a WAN round trip in it shows).
	for _, d := range p.dcs {
		var one []time.Duration
		for k := range 10 {
			conn, code, took, err := AuthDevice(context.Background(), d.hub.WSURL, SignDevice(fmt.Sprintf("%s-ONE-%d", strings.ToUpper(d.name), k), nuid.Next()))
			if err != nil || code != 0 {
				p.problem("a lone connect in %s answered %d (%v)", d.name, code, err)
				continue
			}
			_ = conn.Close()
			one = append(one, took)
		}
		d.fig.LoneConnectP50 = Percentile(one, 50)
	}
}

// replayLadder uses a fresh nonce in from and sends the same signed auth
// to to after each delay of replayLadder; it returns the smallest delay
// from which to refused every one (-1 when it accepted the last).
func (p *partition) replayLadder(from, to *dcScene) time.Duration {
	ctx := context.Background()
	refusedFrom := time.Duration(-1)
	for k, delay := range replayLadder {
		a := SignDevice(fmt.Sprintf("%s-RP-%d", strings.ToUpper(from.name), k), nuid.Next())
		conn, code, _, err := AuthDevice(ctx, from.hub.WSURL, a)
		if err != nil || code != 0 {
			p.problem("replay probe: auth in %s answered %d (%v)", from.name, code, err)
			return -1
		}
		used := time.Now()
		time.Sleep(time.Until(used.Add(delay))) // the delay is what is measured
		again, code2, _, err := AuthDevice(ctx, to.hub.WSURL, a)
		_ = conn.Close()
		if err != nil {
			p.problem("replay probe in %s: %v", to.name, err)
			return -1
		}
		switch {
		case code2 == 401:
			if refusedFrom < 0 {
				refusedFrom = delay
			}
		case code2 == 0:
			_ = again.Close()
			p.crossed[a.SN] = true
			from.fig.ReplayAccepted++
			refusedFrom = -1
		default:
			p.problem("replay probe in %s answered %d", to.name, code2)
		}
	}
	if refusedFrom < 0 {
		p.problem("a nonce used in %s was accepted in %s %v later (want refused within %v)", from.name, to.name, ReplayLimit, ReplayLimit)
	}
	return refusedFrom
}

// partitioned cuts the WAN and checks each data centre's own service.
func (p *partition) partitioned() {
	t := p.t
	for _, d := range p.dcs {
		d.drainPresence()
	}
	cutAt := time.Now()
	how := "cut"
	if p.o.Silent {
		how = "silenced"
		p.servers.Blackhole()
	} else {
		p.servers.Cut()
	}
	t.Logf("%s: WAN %s for %v", cutAt.Format("15:04:05.000"), how, p.o.Cut)
	// The cut is seen: a command to the other data centre answers 503.
	for i, d := range p.dcs {
		other := p.dcs[1-i].devices[0].sn
		seen := false
		for time.Since(cutAt) < p.o.Cut {
			code, _ := d.command(other)
			d.fig.CutCrossCodes[code]++
			if code == 503 {
				seen = true
				break
			}
		}
		if !seen {
			p.problem("during the cut, %s never answered 503 to a command for %s", d.name, other)
		}
	}
	ctx := context.Background()
	for i, d := range p.dcs {
		// A new device authenticates, and stays (it must be listed in
		// both data centres after the heal).
		sn := fmt.Sprintf("%s-CUT", strings.ToUpper(d.name))
		dev, took, err := dialDCDevice(ctx, d.hub.WSURL, sn, i)
		if err != nil {
			p.problem("during the cut, a new device in %s: %v", d.name, err)
		} else {
			d.fig.CutConnect = took
			d.devices = append(d.devices, dev)
			p.runDevice(dev, 0)
		}
		// A replayed nonce is refused in its own data centre.
		a := SignDevice(fmt.Sprintf("%s-RP-CUT", strings.ToUpper(d.name)), nuid.Next())
		conn, code, _, err := AuthDevice(ctx, d.hub.WSURL, a)
		if err != nil || code != 0 {
			p.problem("during the cut, auth in %s answered %d (%v)", d.name, code, err)
		} else {
			p.cutAuth[i] = &a
			_ = conn.Close()
			again, code2, _, err := AuthDevice(ctx, d.hub.WSURL, a)
			if err == nil && code2 == 0 {
				_ = again.Close()
			}
			if code2 != 401 {
				p.problem("during the cut, a replayed nonce in %s answered %d (%v), want 401", d.name, code2, err)
			}
		}
		// Command and push to an own device; commands to the other
		// data centre's devices answer 503.
		if code, _ := d.command(d.devices[1%len(d.devices)].sn); code != 0 {
			p.problem("during the cut, a command in %s to its own device answered %d", d.name, code)
		}
		if ok, why := d.push(d.devices[1%len(d.devices)]); !ok {
			p.problem("during the cut, a push in %s to its own device: %s", d.name, why)
		}
		// What a push to a device of the other data centre answers (a
		// figure: PROTOCOL §5 answers a push with its id, and §8 asks
		// 503 of requests only; the push itself cannot arrive).
		far := p.dcs[1-i].devices[0].sn
		m := d.admin.Request("/admin/push", map[string]any{"target": map[string]any{"sn": far}, "service": "/push/partition", "values": map[string]any{}})
		d.fig.CutCrossPush = m.Code
		for k := range 3 {
			other := p.dcs[1-i].devices[(k+1)%len(p.dcs[1-i].devices)].sn
			code, _ := d.command(other)
			d.fig.CutCrossCodes[code]++
			if code != 503 {
				p.problem("during the cut, a command in %s for %s (other DC) answered %d, want 503", d.name, other, code)
			}
		}
	}
	// Every device has a report acknowledged that it sent during the cut.
	since := cutAt.Add(time.Second)
	deadline := cutAt.Add(p.o.Cut)
	for _, d := range p.dcs {
		for _, dev := range d.devices {
			for dev.ackedSince(since) == 0 && time.Now().Before(deadline.Add(10*time.Second)) {
				time.Sleep(20 * time.Millisecond) // the poll period
			}
			if dev.ackedSince(since) == 0 {
				p.problem("during the cut, no status report of %s (%s) was acknowledged", dev.sn, d.name)
				break
			}
		}
	}
	time.Sleep(time.Until(deadline)) // the cut's length is the scenario's
	for _, d := range p.dcs {
		d.drainPresence()
	}
	p.servers.Heal()
	p.healAt = time.Now()
	p.cutAt = cutAt
	t.Logf("%s: WAN healed after %v", p.healAt.Format("15:04:05.000"), p.healAt.Sub(cutAt).Round(time.Millisecond))
}
