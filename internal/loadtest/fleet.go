package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/gorilla/websocket"
)

// DeviceType is the type every load device states in /auth/device.
const DeviceType = "retail"

// Bounds of one device's connection.
const (
	dialTimeout  = 15 * time.Second // dial plus auth answer, per attempt
	dialAttempts = 3                // a refused or reset dial is retried
	closeWait    = 10 * time.Second // Close waits this long for readers
)

var (
	pushMarker  = []byte(`"op":"push"`)
	stampMarker = []byte(`"values":{"t":`)
)

// Fleet is a set of authenticated device connections. Each connection has a
// reader goroutine that counts the pushes it receives and, when a push's
// values start with a send timestamp {"t":<unix nanos>,...}, records the
// delivery latency. All counters are shared across the fleet.
type Fleet struct {
	wsURL, prefix string
	dialer        *websocket.Dialer
	master        []byte

	mu    sync.Mutex
	conns []*websocket.Conn

	closed  atomic.Bool
	readers sync.WaitGroup

	pushes      atomic.Int64 // push messages received
	frames      atomic.Int64 // text frames received after auth
	others      atomic.Int64 // messages that are not pushes
	disconnects atomic.Int64 // connections that ended before Close
	retries     atomic.Int64 // dial attempts repeated

	endMu   sync.Mutex
	endings map[string]int // why connections ended before Close

	// Latency holds push delivery latencies (receipt minus the "t" stamp).
	Latency *Reservoir
}

// FleetStats is a snapshot of a Fleet's counters.
type FleetStats struct {
	Devices     int            `json:"devices"`
	Pushes      int64          `json:"pushes"`
	Frames      int64          `json:"frames"`
	Others      int64          `json:"others"`
	Disconnects int64          `json:"disconnects"`
	DialRetries int64          `json:"dial_retries"`
	Endings     map[string]int `json:"endings,omitempty"`
}

// NewFleet returns an empty fleet of devices named prefix+index, dialling
// wsURL, signing with the --dev master secret. Grow connects them.
func NewFleet(wsURL, prefix string) *Fleet {
	return &Fleet{
		wsURL:  wsURL,
		prefix: prefix,
		master: []byte(DevMasterSecret),
		dialer: &websocket.Dialer{
			// Small buffers keep the generator light: it holds many
			// thousands of connections in one process.
			ReadBufferSize:   1024,
			WriteBufferSize:  1024,
			HandshakeTimeout: dialTimeout,
		},
		endings: map[string]int{},
		Latency: NewReservoir(200_000, 64),
	}
}

// DialDevices connects n devices (serials prefix+"0" ... prefix+(n-1), type
// "retail"), concurrency at a time, each authenticated with a fresh random
// nonce. It returns once every device is authenticated, or the first error
// (having closed the devices already connected).
func DialDevices(ctx context.Context, wsURL, prefix string, n, concurrency int) (*Fleet, error) {
	f := NewFleet(wsURL, prefix)
	if err := f.Grow(ctx, n, concurrency); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Len is the number of connected devices.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// SN is the serial of device i.
func (f *Fleet) SN(i int) string { return f.prefix + strconv.Itoa(i) }

// Grow connects devices until the fleet holds n, concurrency at a time. On
// an error the devices already connected stay in the fleet.
func (f *Fleet) Grow(ctx context.Context, n, concurrency int) error {
	if f.closed.Load() {
		return errors.New("loadtest: fleet closed")
	}
	from := f.Len()
	if n <= from {
		return nil
	}
	concurrency = max(1, min(concurrency, n-from))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	next := make(chan int)
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := f.dialDevice(ctx, f.SN(i))
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("device %s: %w", f.SN(i), err) })
					cancel()
					continue
				}
				f.adopt(c, i)
			}
		}()
	}
feed:
	for i := from; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if got := f.Len(); got != n {
		return fmt.Errorf("loadtest: %d devices connected, want %d", got, n)
	}
	return nil
}

// dialDevice connects and authenticates one device, retrying a failed
// dial (never a refused auth) up to dialAttempts times.
func (f *Fleet) dialDevice(ctx context.Context, sn string) (*websocket.Conn, error) {
	var err error
	for attempt := range dialAttempts {
		if attempt > 0 {
			f.retries.Add(1)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		var c *websocket.Conn
		var refused bool
		c, refused, err = f.dialOnce(ctx, sn)
		if err == nil {
			return c, nil
		}
		if refused || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

// dialOnce makes one attempt. refused is true when the hub answered the
// auth request with a failure, which a retry would not fix.
func (f *Fleet) dialOnce(ctx context.Context, sn string) (c *websocket.Conn, refused bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, resp, err := f.dialer.DialContext(ctx, f.wsURL, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, false, err
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetWriteDeadline(deadline)
	_ = c.SetReadDeadline(deadline)
	frame, err := f.authFrame(sn)
	if err == nil {
		err = c.WriteMessage(websocket.TextMessage, frame)
	}
	if err != nil {
		_ = c.Close()
		return nil, false, err
	}
	// Read until the auth response; anything else that arrives meanwhile
	// is counted like later traffic.
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			_ = c.Close()
			return nil, false, fmt.Errorf("awaiting auth response: %w", err)
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			var m struct {
				Op        string `json:"op"`
				RequestID string `json:"request_id"`
				Code      int    `json:"code"`
				Result    bool   `json:"result"`
				Msg       string `json:"msg"`
			}
			if json.Unmarshal(line, &m) != nil || m.Op != "response" || m.RequestID != "auth" {
				f.count(line, time.Now(), 0)
				continue
			}
			if m.Code != 0 || !m.Result {
				_ = c.Close()
				return nil, true, fmt.Errorf("/auth/device refused: code %d %q", m.Code, m.Msg)
			}
			_ = c.SetReadDeadline(time.Time{})
			_ = c.SetWriteDeadline(time.Time{})
			return c, false, nil
		}
	}
}

// authFrame is a signed /auth/device request for sn, now, with a fresh
// random nonce.
func (f *Fleet) authFrame(sn string) ([]byte, error) {
	return deviceAuthFrame(f.master, sn, DeviceType)
}

// deviceAuthFrame is a signed /auth/device request (request_id "auth")
// for sn stating type typ, now, with a fresh random nonce; master is the
// secret device keys derive from.
func deviceAuthFrame(master []byte, sn, typ string) ([]byte, error) {
	var nb [16]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	nonce := hex.EncodeToString(nb[:])
	ts := time.Now().Unix()
	return json.Marshal(map[string]any{
		"op": "request", "service": "/auth/device", "request_id": "auth",
		"args": map[string]any{
			"sn": sn, "ts": ts, "nonce": nonce, "type": typ,
			"sig": auth.Sign(auth.DeviceKey(master, sn), sn, ts, nonce),
		},
	})
}

// adopt adds an authenticated connection and starts its reader.
func (f *Fleet) adopt(c *websocket.Conn, key int) {
	f.mu.Lock()
	if f.closed.Load() {
		f.mu.Unlock()
		_ = c.Close()
		return
	}
	f.conns = append(f.conns, c)
	f.readers.Add(1)
	f.mu.Unlock()
	go f.read(c, key)
}

// read counts what arrives on c until it ends. It reads each frame into a
// buffer of its own, reused, so a busy fleet allocates little.
func (f *Fleet) read(c *websocket.Conn, key int) {
	defer f.readers.Done()
	var buf []byte
	for {
		typ, r, err := c.NextReader()
		if err != nil {
			f.ended(err)
			return
		}
		buf, err = readInto(buf[:0], r)
		if err != nil {
			f.ended(err)
			return
		}
		if typ != websocket.TextMessage {
			continue
		}
		f.frames.Add(1)
		now := time.Now()
		for line := range bytes.SplitSeq(buf, []byte{'\n'}) {
			f.count(line, now, key)
		}
	}
}

// count classifies one message received at now.
func (f *Fleet) count(line []byte, now time.Time, key int) {
	if len(line) == 0 {
		return
	}
	if !bytes.Contains(line, pushMarker) {
		f.others.Add(1)
		return
	}
	if t, ok := sendStamp(line); ok {
		f.Latency.Add(key, now.Sub(time.Unix(0, t)))
	}
	f.pushes.Add(1)
}

// sendStamp finds the "t" that starts a push's values, in unix nanos.
func sendStamp(line []byte) (int64, bool) {
	i := bytes.Index(line, stampMarker)
	if i < 0 {
		return 0, false
	}
	rest := line[i+len(stampMarker):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	t, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return t, err == nil
}

// readInto appends all of r to buf, growing it as needed.
func readInto(buf []byte, r io.Reader) ([]byte, error) {
	if cap(buf) == 0 {
		buf = make([]byte, 0, 512) // one push frame fits
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// ended records why a connection ended, unless the fleet closed it.
func (f *Fleet) ended(err error) {
	if f.closed.Load() {
		return
	}
	f.disconnects.Add(1)
	why := endReason(err)
	f.endMu.Lock()
	if len(f.endings) < 100 {
		f.endings[why]++
	} else {
		f.endings["(other)"]++
	}
	f.endMu.Unlock()
}

// Pushes is the number of push messages received so far.
func (f *Fleet) Pushes() int64 { return f.pushes.Load() }

// Disconnects is the number of connections that ended before Close.
func (f *Fleet) Disconnects() int64 { return f.disconnects.Load() }

// Stats returns a snapshot of the counters.
func (f *Fleet) Stats() FleetStats {
	f.endMu.Lock()
	endings := make(map[string]int, len(f.endings))
	for k, v := range f.endings {
		endings[k] = v
	}
	f.endMu.Unlock()
	return FleetStats{
		Devices: f.Len(), Pushes: f.pushes.Load(), Frames: f.frames.Load(), Others: f.others.Load(),
		Disconnects: f.disconnects.Load(), DialRetries: f.retries.Load(), Endings: endings,
	}
}

// EndingsString lists why connections ended, most frequent first.
func (s FleetStats) EndingsString() string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range s.Endings {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	var b bytes.Buffer
	for i, x := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%dx %s", x.v, x.k)
	}
	return b.String()
}

// WaitPushes waits until at least target pushes have arrived. It fails at
// once when a connection drops (its pushes would never come) and when ctx
// ends. It polls every millisecond, which costs the generator little.
func (f *Fleet) WaitPushes(ctx context.Context, target int64) error {
	if f.pushes.Load() >= target {
		return nil
	}
	d0 := f.disconnects.Load()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("loadtest: %d pushes received, want %d: %w", f.pushes.Load(), target, ctx.Err())
		case <-tick.C:
		}
		if f.pushes.Load() >= target {
			return nil
		}
		if d := f.disconnects.Load(); d > d0 {
			return fmt.Errorf("loadtest: %d connection(s) dropped while waiting for pushes (%d of %d received): %s",
				d-d0, f.pushes.Load(), target, f.Stats().EndingsString())
		}
	}
}

// Close closes every connection, sending a normal close first, and waits
// (at most 10 s) for the readers to stop.
func (f *Fleet) Close() {
	f.mu.Lock()
	if !f.closed.CompareAndSwap(false, true) {
		f.mu.Unlock()
		return
	}
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	for _, c := range conns {
		_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(100*time.Millisecond))
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() {
		f.readers.Wait()
		close(done)
	}()
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}

// endReason names why a device connection ended, for the tally of
// endings: its close code and text, eof, timeout, or the error.
func endReason(err error) string {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("close %d %s", ce.Code, ce.Text)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}
