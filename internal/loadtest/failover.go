package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Failover is the scene of a server failover: a cluster of three
// nats-server processes, a hub node on each (state at --replicas 3, each
// node's connection listing its own server first and the others to fail
// over to), devices on every node that report status and answer
// commands, and an admin on the first node that commands them in turn.
// A test kills and restarts servers between Runs, then Checks what that
// left.
type Failover struct {
	Cluster *natstest.Cluster
	Nodes   []*hubtest.Node
	js      jetstream.JetStream // on the first server
	admin   *hubtest.Client
	devices []*foDevice
	opts    FailoverOptions
	stop    chan struct{}
	wg      sync.WaitGroup
	// Owned by the test goroutine.
	commands []foCommand
	pushes   []foPush
	kills    []foKill
}

type foPush struct {
	at   time.Time
	dev  *foDevice
	id   string // the push id the admin was answered, "" when refused
	code int
	msg  string
}

// FailoverOptions shapes StartFailover.
type FailoverOptions struct {
	// PerNode is the number of devices on each node (default 3).
	PerNode int
	// ReportEvery is each device's status period (default 150 ms).
	ReportEvery time.Duration
	// CommandEvery paces the admin's commands (default 25 ms), under its
	// session's rate limit; commands go one at a time.
	CommandEvery time.Duration
}

// FailoverWindow is how long after a kill a command or a push to a
// device of a node whose own server was killed may fail (it reconnects
// meanwhile; from a second before the kill, for what was in flight), and
// how long a status report sent after a kill counts as sent during the
// failover.
const FailoverWindow = 10 * time.Second

type foCommand struct {
	at   time.Time
	node int // the device's node
	code int
	rtt  time.Duration
}

type foKill struct {
	at       time.Time
	server   int
	affected map[int]bool // nodes whose connection was to the server
}

// StartFailover starts the cluster, the nodes, the admin and the devices,
// which report from now until Check (or the test's end).
func StartFailover(t testing.TB, o FailoverOptions) *Failover {
	t.Helper()
	if o.PerNode == 0 {
		o.PerNode = 3
	}
	if o.ReportEvery == 0 {
		o.ReportEvery = 150 * time.Millisecond
	}
	if o.CommandEvery == 0 {
		o.CommandEvery = 25 * time.Millisecond
	}
	c := natstest.StartCluster(t, natstest.ClusterOptions{})
	f := &Failover{Cluster: c, opts: o, stop: make(chan struct{})}
	connect := func(first int, name string) *nats.Conn {
		urls := []string{c.Servers[first].URL()}
		for i, s := range c.Servers {
			if i != first {
				urls = append(urls, s.URL())
			}
		}
		nc, err := nats.Connect(strings.Join(urls, ","), nats.Name(name), nats.DontRandomize(),
			nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	f.js, _ = jetstream.New(connect(0, "failover-test"))
	natstest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := f.js.AccountInfo(ctx)
		return err
	})
	opt := func(h *hub.Config, _ *node.Config) {
		h.Replicas, h.StatusHistory = 3, 10000
	}
	for i := range c.Servers {
		id := fmt.Sprintf("fo-%c", 'a'+i)
		f.Nodes = append(f.Nodes, hubtest.StartNodeOn(t, connect(i, id), id, opt))
	}
	f.admin = hubtest.Admin(t, f.Nodes[0], "admin", hubtest.AdminPassword)
	for i, n := range f.Nodes {
		for j := range o.PerNode {
			f.devices = append(f.devices, dialFoDevice(t, n, i, fmt.Sprintf("FO-%d-%d", i, j)))
		}
	}
	for _, d := range f.devices {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			d.report(f.stop, o.ReportEvery)
		}()
	}
	t.Cleanup(f.halt)
	return f
}

// halt stops the devices' reports and waits for them. Safe to call twice.
func (f *Failover) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
}

// serverName is the name of server i.
func (f *Failover) serverName(i int) string { return fmt.Sprintf("%s-%d", f.Cluster.Name, i+1) }

// LeaderOf is the index of the server that leads stream.
func (f *Failover) LeaderOf(t testing.TB, stream string) int {
	t.Helper()
	leader := -1
	natstest.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := f.js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		if cl := st.CachedInfo().Cluster; cl != nil {
			for i := range f.Cluster.Servers {
				if cl.Leader == f.serverName(i) {
					leader = i
					return nil
				}
			}
		}
		return fmt.Errorf("%s has no leader", stream)
	})
	return leader
}

// PlaceLeaders moves the leaders of the streams to server i and waits
// until each says so.
func (f *Failover) PlaceLeaders(t testing.TB, i int, streams ...string) {
	t.Helper()
	name := f.serverName(i)
	nc := f.Nodes[0].NC
	for _, s := range streams {
		natstest.Eventually(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			st, err := f.js.Stream(ctx, s)
			if err != nil {
				return err
			}
			info := st.CachedInfo()
			if info.Cluster != nil && info.Cluster.Leader == name {
				return nil
			}
			req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": name}})
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+s, req, 3*time.Second)
			return fmt.Errorf("%s led by %+v, want %s", s, info.Cluster, name)
		})
	}
}

// Kill kills server i with SIGKILL and notes which nodes it served.
func (f *Failover) Kill(t testing.TB, i int) {
	t.Helper()
	k := foKill{at: time.Now(), server: i, affected: map[int]bool{}}
	for n, node := range f.Nodes {
		if node.NC.ConnectedUrl() == f.Cluster.Servers[i].URL() {
			k.affected[n] = true
		}
	}
	f.kills = append(f.kills, k)
	t.Logf("%s: killing server %d (nodes %v on it)", k.at.Format("15:04:05.000"), i, k.affected)
	f.Cluster.Servers[i].Kill()
}

// Restart starts server i again and waits until every stream of the
// hub has a leader and every replica is current, so that the next kill
// leaves a quorum.
func (f *Failover) Restart(t testing.TB, i int) {
	t.Helper()
	f.Cluster.Servers[i].Restart(t)
	natstest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		names := f.js.StreamNames(ctx)
		for name := range names.Name() {
			st, err := f.js.Stream(ctx, name)
			if err != nil {
				return err
			}
			cl := st.CachedInfo().Cluster
			if cl == nil || cl.Leader == "" || len(cl.Replicas) != 2 {
				return fmt.Errorf("%s: cluster %+v", name, cl)
			}
			for _, r := range cl.Replicas {
				if !r.Current || r.Offline {
					return fmt.Errorf("%s: replica %s not current", name, r.Name)
				}
			}
		}
		return names.Err()
	})
}

// Run commands the devices in turn, one at a time, for d.
func (f *Failover) Run(t testing.TB, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	tick := time.NewTicker(f.opts.CommandEvery)
	defer tick.Stop()
	for time.Now().Before(end) {
		<-tick.C
		turn := len(f.commands) + len(f.pushes)
		dev := f.devices[turn%len(f.devices)]
		at := time.Now()
		if turn%4 == 3 {
			// Every fourth turn a push, to the device alone.
			m := f.admin.Request("/admin/push", map[string]any{"target": map[string]any{"sn": dev.sn}, "service": "/push/fo", "values": map[string]any{}})
			var v struct{ ID string }
			if m.Code == 0 {
				_ = json.Unmarshal(m.Values, &v)
			}
			f.pushes = append(f.pushes, foPush{at: at, dev: dev, id: v.ID, code: m.Code, msg: m.Msg})
			continue
		}
		m := f.admin.Request("/admin/command", map[string]any{"sn": dev.sn, "service": "/cmd/ping", "timeout_ms": 3000})
		f.commands = append(f.commands, foCommand{at: at, node: dev.node, code: m.Code, rtt: time.Since(at)})
	}
}

// FailoverResult is what Check measured.
type FailoverResult struct {
	Devices, Kills int
	// Status reports: answered 0 (acknowledged), by code, and not
	// answered at all; acknowledged ones missing from HUB_STATUS.
	StatusAcked, StatusUnanswered, StatusLost int
	StatusCodes                               map[int]int
	// Acknowledgement times: all, and of reports sent within
	// FailoverWindow after a kill.
	StatusP50, StatusP99, StatusMax, FailoverP99 time.Duration
	// Commands: sent, failed to devices of nodes whose own server was not
	// just killed (must be 0), failed to those of nodes that reconnected.
	Commands, CommandsFailed, CommandsFailedReconnecting int
	CommandP50, CommandP99, CommandMax                   time.Duration
	// Pushes: sent, refused or not delivered to devices of nodes whose
	// own server was not just killed (must be 0), and to those of nodes
	// that reconnected (core NATS: at most once).
	Pushes, PushesMissed, PushesMissedReconnecting int
	// Sessions that ended, and devices with an offline record.
	SessionsEnded, FalseOffline int
}

func (r FailoverResult) String() string {
	return fmt.Sprintf("devices %d, kills %d; status acked %d (by code %v), unanswered %d, lost %d, ack p50 %v p99 %v max %v, p99 during failover %v; "+
		"commands %d, failed %d (+%d to a reconnecting node), round trip p50 %v p99 %v max %v; pushes %d, missed %d (+%d to a reconnecting node); sessions ended %d, false offline %d",
		r.Devices, r.Kills, r.StatusAcked, r.StatusCodes, r.StatusUnanswered, r.StatusLost,
		r.StatusP50.Round(time.Millisecond), r.StatusP99.Round(time.Millisecond), r.StatusMax.Round(time.Millisecond), r.FailoverP99.Round(time.Millisecond),
		r.Commands, r.CommandsFailed, r.CommandsFailedReconnecting,
		r.CommandP50.Round(time.Microsecond), r.CommandP99.Round(time.Microsecond), r.CommandMax.Round(time.Microsecond),
		r.Pushes, r.PushesMissed, r.PushesMissedReconnecting, r.SessionsEnded, r.FalseOffline)
}

// Check waits for every device to have a report acknowledged once more,
// stops them, and checks: no session ended, every report answered (the
// last one or two may be under way as the devices stop), every
// acknowledged status in HUB_STATUS, no offline record, no command
// failed to a device of a node whose own server was not killed in the
// FailoverWindow before it. It reports each failure with t.Errorf and
// returns the figures.
func (f *Failover) Check(t testing.TB) FailoverResult {
	t.Helper()
	f.awaitAcks(t)
	// The devices' own closes from here on get offline records of their
	// own (after the grace), which are no concern of the failover.
	haltAt := time.Now().UnixMilli()
	f.halt()
	r := FailoverResult{Devices: len(f.devices), Kills: len(f.kills), StatusCodes: map[int]int{}}
	duringKill := func(at time.Time) bool {
		for _, k := range f.kills {
			if !at.Before(k.at) && at.Before(k.at.Add(FailoverWindow)) {
				return true
			}
		}
		return false
	}
	var lat, failoverLat []time.Duration
	acked := map[string]bool{}
	for _, d := range f.devices {
		d.mu.Lock()
		if d.readErr != nil {
			r.SessionsEnded++
			t.Errorf("%s: session ended: %v", d.sn, d.readErr)
		}
		if n := len(d.pending); n > 2 {
			r.StatusUnanswered += n
			t.Errorf("%s: %d status reports never answered", d.sn, n)
		}
		for _, a := range d.acks {
			acked[a.cid] = true
			lat = append(lat, a.lat)
			if duringKill(a.sent) {
				failoverLat = append(failoverLat, a.lat)
			}
		}
		for c, n := range d.codes {
			r.StatusCodes[c] += n
		}
		d.mu.Unlock()
	}
	r.StatusAcked = len(acked)
	r.StatusP50, r.StatusP99, r.StatusMax = Percentile(lat, 50), Percentile(lat, 99), Percentile(lat, 100)
	r.FailoverP99 = Percentile(failoverLat, 99)

	// A node is reconnecting from a moment before the kill (a push or a
	// command answer in flight through the server dies with it) to
	// FailoverWindow after.
	reconnecting := func(node int, at time.Time) bool {
		for _, k := range f.kills {
			if k.affected[node] && at.After(k.at.Add(-time.Second)) && at.Before(k.at.Add(FailoverWindow)) {
				return true
			}
		}
		return false
	}
	var rtt []time.Duration
	failed := map[string]int{}
	for _, c := range f.commands {
		rtt = append(rtt, c.rtt)
		if c.code == 0 {
			continue
		}
		if reconnecting(c.node, c.at) {
			r.CommandsFailedReconnecting++
			continue
		}
		r.CommandsFailed++
		failed[fmt.Sprintf("node %d code %d", c.node, c.code)]++
	}
	if r.CommandsFailed > 0 {
		t.Errorf("commands failed to devices of nodes whose server stayed up: %v", failed)
	}
	r.Commands, r.Pushes = len(f.commands), len(f.pushes)
	for _, p := range f.pushes {
		p.dev.mu.Lock()
		got := p.id != "" && p.dev.pushed[p.id]
		p.dev.mu.Unlock()
		switch {
		case got:
		case reconnecting(p.dev.node, p.at):
			r.PushesMissedReconnecting++
		default:
			r.PushesMissed++
			t.Logf("push to %s (node %d) at %s: code %d %q, id %q, not received", p.dev.sn, p.dev.node, p.at.Format("15:04:05.000"), p.code, p.msg, p.id)
		}
	}
	if r.PushesMissed > 0 {
		t.Errorf("%d pushes to devices of nodes whose server stayed up were refused or not delivered", r.PushesMissed)
	}
	r.CommandP50, r.CommandP99, r.CommandMax = Percentile(rtt, 50), Percentile(rtt, 99), Percentile(rtt, 100)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Acknowledged means stored in the stream the nodes write: their
	// data centre's own in data-centre mode (a named cluster), which the
	// §6 names aggregate.
	l := f.Nodes[0].Hub.Layout()
	stored := map[string]bool{}
	if err := readStream(ctx, f.js, l.StatusStream(), func(data []byte) {
		var rec struct {
			Status struct {
				CID string `json:"cid"`
			} `json:"status"`
		}
		if json.Unmarshal(data, &rec) == nil {
			stored[rec.Status.CID] = true
		}
	}); err != nil {
		t.Fatal(err)
	}
	for cid := range acked {
		if !stored[cid] {
			r.StatusLost++
		}
	}
	if r.StatusLost > 0 {
		t.Errorf("%d of %d acknowledged status records are not in %s", r.StatusLost, len(acked), l.StatusStream())
	}
	recs := map[string][]string{}
	if err := readStream(ctx, f.js, l.PresenceStream(), func(data []byte) {
		var rec hub.PresenceRecord
		if json.Unmarshal(data, &rec) == nil && rec.At < haltAt {
			recs[rec.SN] = append(recs[rec.SN], string(rec.Reason))
		}
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range f.devices {
		if h := recs[d.sn]; len(h) != 1 || h[0] != string(hub.ReasonConnected) {
			r.FalseOffline++
			t.Errorf("%s: presence history %v, want [connected]", d.sn, h)
		}
	}
	return r
}

// readStream reads every message of a stream, once it can: right after a
// server came back the cluster may still be electing the leaders a
// consumer needs, so a failed read is tried again, whole, until ctx ends.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, fn func([]byte)) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs, err := readStreamOnce(ctx, js, stream)
		if err == nil {
			for _, m := range msgs {
				fn(m)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", stream, err)
		case <-tick.C:
		}
	}
}

func readStreamOnce(ctx context.Context, js jetstream.JetStream, stream string) ([][]byte, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
	}
}

// Percentile is the p-th percentile of d (p 100: the largest), 0 for none.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// foDevice is a device that reports status periodically and answers
// every command at once, on one WebSocket: a reader and a writer
// goroutine, as a device SDK has.
type foDevice struct {
	sn   string
	node int
	conn *websocket.Conn
	out  chan []byte // frames to write: command answers

	mu      sync.Mutex
	n       int                  // reports sent. Guarded by mu.
	pending map[string]time.Time // reports not answered, by request id. Guarded by mu.
	acks    []foAck              // reports answered 0. Guarded by mu.
	codes   map[int]int          // report answers by code. Guarded by mu.
	pushed  map[string]bool      // ids of the pushes received. Guarded by mu.
	readErr error                // the session's end, unless stopped. Guarded by mu.
	stopped bool                 // Guarded by mu.
}

type foAck struct {
	cid  string
	sent time.Time
	lat  time.Duration
}

func dialFoDevice(t testing.TB, n *hubtest.Node, node int, sn string) *foDevice {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(n.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.WriteMessage(websocket.TextMessage, []byte(hubtest.RequestFrame("/auth/device", "auth", hubtest.DeviceArgs(sn, "robot")))); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := conn.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m hubtest.Msg
	if json.Unmarshal(b, &m) != nil || m.RequestID != "auth" || m.Code != 0 {
		t.Fatalf("%s: auth answered %s", sn, b)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &foDevice{sn: sn, node: node, conn: conn, out: make(chan []byte, 256), pending: map[string]time.Time{}, codes: map[int]int{}, pushed: map[string]bool{}}
}

// report runs the device until stop: a writer, that reports every period
// and sends the command answers the reader hands it, and the reader.
func (d *foDevice) report(stop <-chan struct{}, every time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.read()
	}()
	defer func() {
		d.mu.Lock()
		d.stopped = true
		d.mu.Unlock()
		_ = d.conn.Close()
		<-done
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case b := <-d.out:
			_ = d.conn.WriteMessage(websocket.TextMessage, b)
		case <-tick.C:
			d.mu.Lock()
			d.n++
			id := "s" + strconv.Itoa(d.n)
			d.pending[id] = time.Now()
			d.mu.Unlock()
			frame := hubtest.RequestFrame("/device/status", id, map[string]any{"cid": d.sn + "/" + id})
			_ = d.conn.WriteMessage(websocket.TextMessage, []byte(frame))
		}
	}
}

// read is the connection's one reader: it hands commands to the writer
// and notes the answers to reports.
func (d *foDevice) read() {
	for {
		_, data, err := d.conn.ReadMessage()
		if err != nil {
			d.mu.Lock()
			if !d.stopped {
				d.readErr = err
			}
			d.mu.Unlock()
			return
		}
		now := time.Now()
		for _, line := range strings.Split(string(data), "\n") {
			var m hubtest.Msg
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			switch {
			case m.Op == "request":
				b, _ := json.Marshal(map[string]any{"op": "response", "service": m.Service, "request_id": m.RequestID, "code": 0, "result": true, "values": map[string]any{"pong": true}})
				select {
				case d.out <- b:
				default: // the writer is stopping
				}
			case m.Op == "push" && m.Service == "/push/fo":
				d.mu.Lock()
				d.pushed[m.ID] = true
				d.mu.Unlock()
			case m.Op == "response" && strings.HasPrefix(m.RequestID, "s"):
				d.mu.Lock()
				if sent, ok := d.pending[m.RequestID]; ok {
					delete(d.pending, m.RequestID)
					d.codes[m.Code]++
					if m.Code == 0 {
						d.acks = append(d.acks, foAck{cid: d.sn + "/" + m.RequestID, sent: sent, lat: now.Sub(sent)})
					}
				}
				d.mu.Unlock()
			}
		}
	}
}

// awaitAcks waits until every device has one report acknowledged more
// than it has now.
func (f *Failover) awaitAcks(t testing.TB) {
	t.Helper()
	before := make([]int, len(f.devices))
	for i, d := range f.devices {
		d.mu.Lock()
		before[i] = len(d.acks)
		d.mu.Unlock()
	}
	natstest.Eventually(t, 20*time.Second, func() error {
		for i, d := range f.devices {
			d.mu.Lock()
			n := len(d.acks)
			d.mu.Unlock()
			if n == before[i] {
				return fmt.Errorf("%s: no report acknowledged since %d", d.sn, n)
			}
		}
		return nil
	})
}
