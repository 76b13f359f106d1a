package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/gorilla/websocket"
)

// DeviceAuth is a signed /auth/device request: a test keeps one to
// send it again (a replay) to the same or another data centre.
type DeviceAuth struct {
	SN    string
	TS    int64
	Nonce string
	Sig   string
}

// SignDevice signs an /auth/device request for sn now, with nonce, under
// the --dev master secret (PROTOCOL §3).
func SignDevice(sn, nonce string) DeviceAuth {
	ts := time.Now().Unix()
	return DeviceAuth{SN: sn, TS: ts, Nonce: nonce, Sig: auth.Sign(auth.DeviceKey([]byte(DevMasterSecret), sn), sn, ts, nonce)}
}

func (a DeviceAuth) frame() []byte {
	return []byte(hubtest.RequestFrame("/auth/device", "auth", map[string]any{
		"sn": a.SN, "ts": a.TS, "nonce": a.Nonce, "sig": a.Sig, "type": DeviceType,
	}))
}

// AuthDevice dials wsURL and sends a: it returns the open connection when
// the hub answered 0 (nil otherwise), the answer's code and the time from
// the dial to the answer.
func AuthDevice(ctx context.Context, wsURL string, a DeviceAuth) (*websocket.Conn, int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	begin := time.Now()
	d := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024, HandshakeTimeout: dialTimeout}
	conn, _, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("loadtest: dial %s: %w", wsURL, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetWriteDeadline(deadline)
	_ = conn.SetReadDeadline(deadline)
	if err := conn.WriteMessage(websocket.TextMessage, a.frame()); err != nil {
		_ = conn.Close()
		return nil, 0, 0, fmt.Errorf("loadtest: %s: send auth: %w", a.SN, err)
	}
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			_ = conn.Close()
			return nil, 0, 0, fmt.Errorf("loadtest: %s: auth answer: %w", a.SN, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			var m hubtest.Msg
			if json.Unmarshal([]byte(line), &m) != nil || m.Op != "response" || m.RequestID != "auth" {
				continue
			}
			took := time.Since(begin)
			if m.Code != 0 {
				_ = conn.Close()
				return nil, m.Code, took, nil
			}
			_ = conn.SetWriteDeadline(time.Time{})
			_ = conn.SetReadDeadline(time.Time{})
			return conn, 0, took, nil
		}
	}
}

// dcDevice is a device of the several-data-centres scenario: it reports
// status every period (each report carrying a content id, "cid", to find
// it in the streams), answers every command at once and notes the pushes
// it receives, on one WebSocket with a reader and a writer goroutine.
type dcDevice struct {
	sn   string
	dc   int // index of its data centre
	conn *websocket.Conn
	out  chan []byte // frames to write: command answers

	mu      sync.Mutex
	n       int                  // reports sent. Guarded by mu.
	pending map[string]time.Time // reports not answered, by request id. Guarded by mu.
	acks    []dcAck              // reports answered 0. Guarded by mu.
	codes   map[int]int          // report answers by code. Guarded by mu.
	pushed  map[string]bool      // ids of the pushes received. Guarded by mu.
	readErr error                // the session's end, unless stopped. Guarded by mu.
	stopped bool                 // Guarded by mu.
}

type dcAck struct {
	cid  string
	sent time.Time
	lat  time.Duration
}

func newDCDevice(sn string, dc int, conn *websocket.Conn) *dcDevice {
	return &dcDevice{sn: sn, dc: dc, conn: conn, out: make(chan []byte, 64),
		pending: map[string]time.Time{}, codes: map[int]int{}, pushed: map[string]bool{}}
}

// run reports every period, the first after offset, until stop; the
// reader runs beside it and both have ended when run returns.
func (d *dcDevice) run(stop <-chan struct{}, offset, every time.Duration) {
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
	first := time.NewTimer(offset)
	defer first.Stop()
	select {
	case <-stop:
		return
	case <-first.C:
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	d.report()
	for {
		select {
		case <-stop:
			return
		case b := <-d.out:
			_ = d.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_ = d.conn.WriteMessage(websocket.TextMessage, b)
		case <-tick.C:
			d.report()
		}
	}
}

func (d *dcDevice) report() {
	d.mu.Lock()
	d.n++
	id := "s" + strconv.Itoa(d.n)
	d.pending[id] = time.Now()
	d.mu.Unlock()
	frame := hubtest.RequestFrame("/device/status", id, map[string]any{"cid": d.sn + "/" + id})
	_ = d.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_ = d.conn.WriteMessage(websocket.TextMessage, []byte(frame))
}

// read is the connection's one reader: it hands command answers to the
// writer and notes the answers to reports and the pushes.
func (d *dcDevice) read() {
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
				b, _ := json.Marshal(map[string]any{"op": "response", "service": m.Service, "request_id": m.RequestID, "code": 0, "result": true, "values": map[string]any{"sn": d.sn}})
				select {
				case d.out <- b:
				default: // the writer is behind: the command times out, and is counted so
				}
			case m.Op == "push":
				d.mu.Lock()
				d.pushed[m.ID] = true
				d.mu.Unlock()
			case m.Op == "response" && strings.HasPrefix(m.RequestID, "s"):
				d.mu.Lock()
				if sent, ok := d.pending[m.RequestID]; ok {
					delete(d.pending, m.RequestID)
					d.codes[m.Code]++
					if m.Code == 0 {
						d.acks = append(d.acks, dcAck{cid: d.sn + "/" + m.RequestID, sent: sent, lat: now.Sub(sent)})
					}
				}
				d.mu.Unlock()
			}
		}
	}
}

// ackedSince is the number of reports sent at or after t and answered 0.
func (d *dcDevice) ackedSince(t time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, a := range d.acks {
		if !a.sent.Before(t) {
			n++
		}
	}
	return n
}

// gotPush reports whether the push with id arrived.
func (d *dcDevice) gotPush(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pushed[id]
}
