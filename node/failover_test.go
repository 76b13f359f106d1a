package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestServerFailover loses one server of a 3-server cluster under load,
// state at --replicas 3: three hub nodes, one on each server; devices on
// each node reporting status every 150 ms and answering commands; an
// admin on the first node commanding them in turn. The server killed (with
// SIGKILL) is the third node's, and leads HUB_STATUS, hub_nodes and
// hub_presence (their leaders are moved there first), so one kill is a
// status failover, a liveness and presence failover, and a node's NATS
// connection moving to another server.
//
// Throughout: no WebSocket session ends; no device gets an offline
// record; every status answered 0 is in HUB_STATUS afterwards; every
// status request is answered; commands to devices of the nodes whose
// server stayed up all succeed (their status waits for the new leader off
// the read loop). Commands to the third node's devices may fail while it
// reconnects, and succeed again afterwards. Then the server is started
// again, and every device reports once more.
func TestServerFailover(t *testing.T) {
	t.Parallel()
	f := startFailover(t, 3)
	f.placeLeaders(t, 2, hub.StreamStatus, "KV_"+hub.BucketNodes, "KV_"+hub.BucketPresence)

	f.run(t, 2*time.Second)
	killedAt := time.Now()
	f.cluster.Servers[2].Kill()
	f.run(t, 12*time.Second)
	f.cluster.Servers[2].Restart(t)
	f.run(t, 3*time.Second)
	f.check(t, killedAt, 2)
}

// failover is a cluster of three servers, a hub node on each, devices on
// every node and an admin on the first.
type failover struct {
	cluster *natstest.Cluster
	js      jetstream.JetStream // on the first server
	nodes   []*hubtest.Node
	admin   *hubtest.Client
	devices []*foDevice
	stop    chan struct{}
	wg      sync.WaitGroup
	// Commands sent, by the index of the device's node. Owned by the
	// test goroutine.
	commands [][]foCommand
}

type foCommand struct {
	at   time.Time
	code int
	rtt  time.Duration
}

func startFailover(t *testing.T, perNode int) *failover {
	t.Helper()
	c := natstest.StartCluster(t, natstest.ClusterOptions{})
	f := &failover{cluster: c, stop: make(chan struct{})}
	connect := func(first int, name string) *nats.Conn {
		// The node's own server first, the others to fail over to.
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
	nc := connect(0, "failover-test")
	f.js, _ = jetstream.New(nc)
	natstest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := f.js.AccountInfo(ctx)
		return err
	})
	opt := func(h *hub.Config, _ *nodeConfig) {
		h.Replicas, h.StatusHistory = 3, 10000
	}
	for i := range c.Servers {
		id := fmt.Sprintf("fo-%c", 'a'+i)
		f.nodes = append(f.nodes, hubtest.StartNodeOn(t, connect(i, id), id, opt))
	}
	f.admin = hubtest.Admin(t, f.nodes[0], "admin", hubtest.AdminPassword)
	for i, n := range f.nodes {
		for j := range perNode {
			f.devices = append(f.devices, dialFoDevice(t, n, i, fmt.Sprintf("FO-%d-%d", i, j)))
		}
	}
	f.commands = make([][]foCommand, len(f.nodes))
	for _, d := range f.devices {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			d.report(f.stop)
		}()
	}
	t.Cleanup(func() { f.halt() })
	return f
}

// halt stops the devices' reports and waits for them. Safe to call twice.
func (f *failover) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
}

// placeLeaders moves the leaders of the streams to server i and waits
// until each says so.
func (f *failover) placeLeaders(t *testing.T, i int, streams ...string) {
	t.Helper()
	name := fmt.Sprintf("%s-%d", f.cluster.Name, i+1)
	nc := f.nodes[0].NC
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
			return fmt.Errorf("%s led by %v, want %s", s, info.Cluster, name)
		})
	}
}

// run commands the devices in turn, one at a time, at most 40 a second,
// for d.
func (f *failover) run(t *testing.T, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	// Paced under the admin session's rate limit.
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		dev := f.devices[i%len(f.devices)]
		at := time.Now()
		m := f.admin.Request("/admin/command", map[string]any{"sn": dev.sn, "service": "/cmd/ping", "timeout_ms": 3000})
		f.commands[dev.node] = append(f.commands[dev.node], foCommand{at: at, code: m.Code, rtt: time.Since(at)})
	}
}

// check stops the devices and checks what the failover left.
func (f *failover) check(t *testing.T, killedAt time.Time, killedNode int) {
	t.Helper()
	// Every device reports once more, on the server started again.
	for _, d := range f.devices {
		d.await(t, 2*time.Second)
	}
	f.halt()

	var lat []time.Duration
	acked := map[string]bool{}
	for _, d := range f.devices {
		d.mu.Lock()
		if d.readErr != nil {
			t.Errorf("%s: session ended: %v", d.sn, d.readErr)
		}
		if n := len(d.pending); n > 2 {
			// The last reports may be under way as the devices stop.
			t.Errorf("%s: %d status reports never answered", d.sn, n)
		}
		for _, cid := range d.acked {
			acked[cid] = true
		}
		lat = append(lat, d.lat...)
		codes := fmt.Sprint(d.codes)
		d.mu.Unlock()
		t.Logf("%s status answers by code: %s", d.sn, codes)
	}
	for node, cmds := range f.commands {
		var rtt []time.Duration
		failed := map[int]int{}
		lastFail := time.Time{}
		for _, c := range cmds {
			rtt = append(rtt, c.rtt)
			if c.code != 0 {
				failed[c.code]++
				lastFail = c.at
			}
		}
		t.Logf("node %d: %d commands, failed by code %v, round trip p50 %v p99 %v max %v", node, len(cmds), failed, pct(rtt, 50), pct(rtt, 99), pct(rtt, 100))
		switch {
		case node != killedNode && len(failed) > 0:
			t.Errorf("node %d (its server stayed up): commands failed %v", node, failed)
		case node == killedNode && lastFail.After(killedAt.Add(10*time.Second)):
			t.Errorf("node %d: a command failed %v after the kill", node, lastFail.Sub(killedAt))
		}
	}
	t.Logf("status acks: %d, latency p50 %v p99 %v max %v", len(lat), pct(lat, 50), pct(lat, 99), pct(lat, 100))

	// Every acknowledged status is stored.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stored := map[string]bool{}
	if err := readAll(ctx, f.js, hub.StreamStatus, func(data []byte) {
		var r struct {
			Status struct {
				CID string `json:"cid"`
			} `json:"status"`
		}
		if json.Unmarshal(data, &r) == nil {
			stored[r.Status.CID] = true
		}
	}); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for cid := range acked {
		if !stored[cid] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged status records are not in %s", lost, len(acked), hub.StreamStatus)
	}
	// No device got an offline record.
	recs := map[string][]string{}
	if err := readAll(ctx, f.js, hub.StreamPresence, func(data []byte) {
		var r hub.PresenceRecord
		if json.Unmarshal(data, &r) == nil {
			recs[r.SN] = append(recs[r.SN], string(r.Reason))
		}
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range f.devices {
		if h := recs[d.sn]; len(h) != 1 || h[0] != string(hub.ReasonConnected) {
			t.Errorf("%s: presence history %v, want [connected]", d.sn, h)
		}
	}
}

// readAll reads every message of a stream.
func readAll(ctx context.Context, js jetstream.JetStream, stream string, fn func([]byte)) error {
	var cons jetstream.Consumer
	var err error
	for {
		// The stream may still be catching up on a server started again.
		if cons, err = js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{}); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return err
	}
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			fn(m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

// foDevice is a device that reports status every 150 ms and answers
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
	acked   []string             // content ids of reports answered 0. Guarded by mu.
	lat     []time.Duration      // answer times of reports answered 0. Guarded by mu.
	codes   map[int]int          // report answers by code. Guarded by mu.
	readErr error                // the session's end, unless stopped. Guarded by mu.
	stopped bool                 // Guarded by mu.
}

func dialFoDevice(t *testing.T, n *hubtest.Node, node int, sn string) *foDevice {
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
	d := &foDevice{sn: sn, node: node, conn: conn, out: make(chan []byte, 256), pending: map[string]time.Time{}, codes: map[int]int{}}
	return d
}

// report runs the device until stop: a writer, that reports every 150 ms
// and sends the command answers the reader hands it, and the reader.
func (d *foDevice) report(stop <-chan struct{}) {
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
	tick := time.NewTicker(150 * time.Millisecond)
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
			case m.Op == "response" && strings.HasPrefix(m.RequestID, "s"):
				d.mu.Lock()
				if sent, ok := d.pending[m.RequestID]; ok {
					delete(d.pending, m.RequestID)
					d.codes[m.Code]++
					if m.Code == 0 {
						d.acked = append(d.acked, d.sn+"/"+m.RequestID)
						d.lat = append(d.lat, now.Sub(sent))
					}
				}
				d.mu.Unlock()
			}
		}
	}
}

// await waits until the device has a report answered 0 more than it has
// now, within timeout after it is sent.
func (d *foDevice) await(t *testing.T, timeout time.Duration) {
	t.Helper()
	d.mu.Lock()
	n := len(d.acked)
	d.mu.Unlock()
	natstest.Eventually(t, 10*time.Second+timeout, func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if len(d.acked) > n {
			return nil
		}
		return fmt.Errorf("%s: no report answered 0 since the restart", d.sn)
	})
}
