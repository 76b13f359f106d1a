package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
)

// A device child is a process of its own (the test binary run again, with
// ChildSpecEnv naming its spec file) that holds part of a large fleet of
// real WebSocket devices: one process may hold at most 20,000 files here,
// so 100,000 devices take several. It connects each device of its spec
// once, never reconnects one that drops, counts per device the probe
// pushes it receives, and answers the test's requests on NATS subjects
// under its spec's Control prefix:
//
//	<control>.stats   ChildStats
//	<control>.check   ProbeCheck in, ProbeResult out
//	<control>.stop    closes every device, answers, and the child exits
//
// It exits by itself at its spec's Deadline, when its control connection
// closes, or when its parent is gone.

// ChildSpecEnv names the environment variable that holds the path of a
// device child's spec (JSON ChildSpec). A test binary whose TestMain sees
// it runs RunDeviceChild instead of its tests.
const ChildSpecEnv = "FLEETHUB_DEVICE_CHILD"

// ProbeService is the service of the probe pushes device children count.
// A probe push's values are {"probe":N}, N in [0, MaxProbes).
const ProbeService = "/push/probe"

// MaxProbes bounds the probe numbers a child counts.
const MaxProbes = 8

// Bounds of a device child.
const (
	childCloseWait  = 30 * time.Second // stop waits this long for readers
	childClosers    = 8                // connections closed in parallel
	childParentPoll = time.Second      // how often the child checks its parent
	childErrSample  = 5                // error messages kept per kind
	childSample     = 5                // serial numbers listed per check outcome

	// unavailableAttempts bounds the attempts of a device refused with
	// 503 (unavailable, try again), backing off up to 3 s between them.
	unavailableAttempts = 20
)

// ChildDevice is one device of a child: its serial number, the type it
// states, and the index in ChildSpec.URLs of the node it connects to.
type ChildDevice struct {
	SN   string `json:"sn"`
	Type string `json:"type"`
	URL  int    `json:"url"`
}

// ChildSpec is what a device child is told.
type ChildSpec struct {
	NATSURL  string        `json:"nats_url"`
	Control  string        `json:"control"` // subject prefix of its control requests
	URLs     []string      `json:"urls"`    // the nodes' ws:// URLs
	Devices  []ChildDevice `json:"devices"`
	Dialers  int           `json:"dialers"` // concurrent dials
	Rate     float64       `json:"rate"`    // dials started per second; 0 is unpaced
	Deadline time.Time     `json:"deadline"`
	// Redial makes a device whose connection ends (once it had
	// authenticated) connect again, as the SDK does: before each attempt
	// it waits a random time in [0, min(RedialMax, RedialMin*2^n)] (full
	// jitter; n counts the failed attempts in a row), until it is back or
	// the child stops.
	Redial    bool          `json:"redial,omitempty"`
	RedialMin time.Duration `json:"redial_min,omitempty"`
	RedialMax time.Duration `json:"redial_max,omitempty"`
}

// ChildStats is a device child's state.
type ChildStats struct {
	PID          int            `json:"pid"`
	NoFile       uint64         `json:"nofile_limit"` // RLIMIT_NOFILE after raising it
	Devices      int            `json:"devices"`
	Connected    int            `json:"connected"` // authenticated and still open
	Failed       int            `json:"failed"`    // never authenticated
	Dropped      int            `json:"dropped"`   // authenticated, then ended
	DroppedByURL []int          `json:"dropped_by_url"`
	DialRetries  int64          `json:"dial_retries"`
	Unavailable  int64          `json:"auth_503"`  // auth refusals with 503, each tried again
	DialDone     bool           `json:"dial_done"` // every device attempted
	DialSeconds  float64        `json:"dial_seconds"`
	Endings      map[string]int `json:"endings,omitempty"` // why dropped connections ended
	Errors       []string       `json:"errors,omitempty"`  // sample of dial errors
	// With Redial: connections that ended and were made again, devices
	// waiting to be (Redialing), and the failed attempts by kind ("dial"
	// for a refused or failed upgrade, "auth <code>" for a refusal), with
	// the time of the last one of each kind.
	Redials        int64                `json:"redials,omitempty"`
	Redialing      int                  `json:"redialing,omitempty"`
	RedialFailures map[string]int       `json:"redial_failures,omitempty"`
	LastFailure    map[string]time.Time `json:"last_failure,omitempty"`
}

// ProbeCheck asks a child how probe Probe was received: by every device
// (Type empty) or by the devices of Type.
type ProbeCheck struct {
	Probe int    `json:"probe"`
	Type  string `json:"type,omitempty"`
}

// ProbeResult counts, over a child's devices, how a probe was received.
// Expected devices should have it exactly once (Once); Missing have it
// not at all, Dup more than once, and Unexpected are devices outside the
// audience that have it.
type ProbeResult struct {
	Expected         int      `json:"expected"`
	Once             int      `json:"once"`
	Missing          int      `json:"missing"`
	MissingClosed    int      `json:"missing_not_connected"` // of Missing, devices not connected (failed or dropped)
	Dup              int      `json:"dup"`
	Unexpected       int      `json:"unexpected"`
	Pushes           int64    `json:"pushes"` // probe pushes received in all
	MissingSample    []string `json:"missing_sample,omitempty"`
	DupSample        []string `json:"dup_sample,omitempty"`
	UnexpectedSample []string `json:"unexpected_sample,omitempty"`
}

// Device states in a child.
const (
	devPending int32 = iota
	devConnected
	devFailed
	devDropped
	devRedialing // its connection ended; it connects again (ChildSpec.Redial)
)

type childDev struct {
	ChildDevice
	state    atomic.Int32
	attempts atomic.Int32 // dial attempts, refused ones included
	probes   [MaxProbes]atomic.Uint32
	conn     *websocket.Conn // set before state becomes devConnected
}

// deviceChild is the running child. Its dial and reader goroutines are
// owned by run, which waits for them.
type deviceChild struct {
	spec   ChildSpec
	log    *slog.Logger
	dialer *websocket.Dialer
	master []byte
	devs   []*childDev
	noFile uint64

	ctx         context.Context // ends when the child stops
	readers     sync.WaitGroup
	closing     atomic.Bool
	retries     atomic.Int64 // attempts repeated
	unavailable atomic.Int64 // auth refusals with 503
	redials     atomic.Int64 // connections made again (Redial)

	dialDone    atomic.Bool
	dialSeconds atomic.Int64 // float64 bits

	mu          sync.Mutex
	endings     map[string]int       // Guarded by mu.
	errs        map[string][]string  // dial errors by kind. Guarded by mu.
	redialFails map[string]int       // failed redial attempts by kind. Guarded by mu.
	lastFail    map[string]time.Time // the last of each kind. Guarded by mu.
}

// RunDeviceChild runs a device child from the spec file at path and
// returns the process's exit code. It logs to standard error.
func RunDeviceChild(path string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b, err := os.ReadFile(path)
	if err != nil {
		log.Error("read spec", "err", err)
		return 2
	}
	var spec ChildSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		log.Error("decode spec", "err", err)
		return 2
	}
	if err := runDeviceChild(spec, log); err != nil {
		log.Error("device child failed", "err", err)
		return 1
	}
	return 0
}

func runDeviceChild(spec ChildSpec, log *slog.Logger) error {
	noFile, err := raiseNoFile()
	if err != nil {
		return err
	}
	if need := uint64(len(spec.Devices)) + 64; noFile < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d, %d devices need %d", noFile, len(spec.Devices), need)
	}
	c := &deviceChild{
		spec: spec, log: log, master: []byte(DevMasterSecret), noFile: noFile,
		dialer: &websocket.Dialer{
			// Small buffers: one process holds many thousands of them.
			ReadBufferSize: 1024, WriteBufferSize: 1024, HandshakeTimeout: dialTimeout,
		},
		endings: map[string]int{}, errs: map[string][]string{},
		redialFails: map[string]int{}, lastFail: map[string]time.Time{},
	}
	for _, d := range spec.Devices {
		c.devs = append(c.devs, &childDev{ChildDevice: d})
	}
	ctx, cancel := context.WithDeadline(context.Background(), spec.Deadline)
	defer cancel()
	c.ctx = ctx

	nc, err := nats.Connect(spec.NATSURL, nats.Name("fleethub-device-child"), nats.MaxReconnects(-1),
		nats.ClosedHandler(func(*nats.Conn) { cancel() }))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	stopped := make(chan struct{})
	var stopOnce sync.Once
	handlers := map[string]nats.MsgHandler{
		"stats": func(m *nats.Msg) { reply(m, c.stats()) },
		"check": func(m *nats.Msg) {
			var pc ProbeCheck
			if err := json.Unmarshal(m.Data, &pc); err != nil || pc.Probe < 0 || pc.Probe >= MaxProbes {
				reply(m, map[string]string{"error": fmt.Sprintf("bad check %q", m.Data)})
				return
			}
			reply(m, c.check(pc))
		},
		"stop": func(m *nats.Msg) {
			// Answered at once: closing thousands of connections on a
			// busy machine may take longer than a request waits.
			reply(m, c.stats())
			stopOnce.Do(func() { close(stopped) })
		},
	}
	for op, h := range handlers {
		if _, err := nc.Subscribe(spec.Control+"."+op, h); err != nil {
			return err
		}
	}
	if err := nc.Flush(); err != nil {
		return err
	}

	var dialers sync.WaitGroup
	dialers.Go(func() { c.dialAll(ctx) })
	ppid := os.Getppid()
	tick := time.NewTicker(childParentPoll)
	defer tick.Stop()
wait:
	for {
		select {
		case <-stopped:
			break wait
		case <-ctx.Done():
			log.Warn("device child ends", "why", context.Cause(ctx))
			break wait
		case <-tick.C:
			if os.Getppid() != ppid {
				log.Warn("device child ends: its parent is gone")
				break wait
			}
		}
	}
	cancel()
	dialers.Wait()
	c.closeAll()
	done := make(chan struct{})
	go func() {
		c.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(childCloseWait):
		return errors.New("readers still running after close")
	}
	// The answer to stop is on its way before the connection closes.
	return nc.FlushTimeout(time.Second)
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns
// it.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return l.Cur, nil
}

func reply(m *nats.Msg, v any) {
	b, _ := json.Marshal(v)
	_ = m.Respond(b)
}

// dialAll connects every device once, spec.Dialers at a time and at
// most spec.Rate a second.
func (c *deviceChild) dialAll(ctx context.Context) {
	start := time.Now()
	pace := rate.NewLimiter(rate.Inf, 1)
	if c.spec.Rate > 0 {
		pace = rate.NewLimiter(rate.Limit(c.spec.Rate), max(1, int(c.spec.Rate/10)))
	}
	next := make(chan *childDev)
	var wg sync.WaitGroup
	for range max(1, c.spec.Dialers) {
		wg.Go(func() {
			for d := range next {
				c.dial(ctx, d)
			}
		})
	}
feed:
	for _, d := range c.devs {
		if pace.Wait(ctx) != nil {
			break
		}
		select {
		case next <- d:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	c.dialSeconds.Store(int64(time.Since(start)))
	c.dialDone.Store(true)
}

// dial connects and authenticates d and starts its reader. As a device
// would, it tries again after a failed dial (up to dialAttempts times) and
// after a refusal with 503, which asks for that (up to unavailableAttempts
// times); any other refusal is final.
func (c *deviceChild) dial(ctx context.Context, d *childDev) {
	var err error
	failed, unavailable := 0, 0
	for {
		if ctx.Err() != nil || c.closing.Load() {
			err = errors.Join(err, errors.New("child stopping"))
			break
		}
		var conn *websocket.Conn
		var code int
		d.attempts.Add(1)
		conn, code, err = c.dialOnce(ctx, d)
		if err == nil {
			d.conn = conn
			d.state.Store(devConnected)
			c.readers.Add(1)
			go c.read(d)
			if c.closing.Load() {
				_ = conn.Close() // closeAll may have passed this device
			}
			return
		}
		var wait time.Duration
		switch code {
		case 0:
			failed++
			if failed >= dialAttempts {
				break
			}
			wait = time.Duration(failed) * 200 * time.Millisecond
		case 503:
			unavailable++
			c.unavailable.Add(1)
			if unavailable >= unavailableAttempts {
				break
			}
			wait = min(time.Duration(unavailable)*500*time.Millisecond, 3*time.Second)
		}
		if wait == 0 {
			break
		}
		c.retries.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	c.noteErr("dial", fmt.Sprintf("%s: %v", d.SN, err))
	d.state.Store(devFailed)
}

// dialOnce makes one attempt. code is the auth response's code when the
// hub refused the device, 0 when the attempt failed otherwise.
func (c *deviceChild) dialOnce(ctx context.Context, d *childDev) (conn *websocket.Conn, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, resp, err := c.dialer.DialContext(ctx, c.spec.URLs[d.URL], nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, 0, err
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetWriteDeadline(deadline)
	_ = conn.SetReadDeadline(deadline)
	frame, err := deviceAuthFrame(c.master, d.SN, d.Type)
	if err == nil {
		err = conn.WriteMessage(websocket.TextMessage, frame)
	}
	if err != nil {
		_ = conn.Close()
		return nil, 0, err
	}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			_ = conn.Close()
			return nil, 0, fmt.Errorf("awaiting auth response: %w", err)
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
				c.count(d, line)
				continue
			}
			if m.Code != 0 || !m.Result {
				_ = conn.Close()
				return nil, m.Code, fmt.Errorf("/auth/device refused: code %d %q", m.Code, m.Msg)
			}
			_ = conn.SetReadDeadline(time.Time{})
			_ = conn.SetWriteDeadline(time.Time{})
			return conn, 0, nil
		}
	}
}

// read counts what arrives for d until its connection ends; with
// Redial, it then connects d again (see redial) and goes on reading.
func (c *deviceChild) read(d *childDev) {
	defer c.readers.Done()
	var buf []byte
	for {
		typ, r, err := d.conn.NextReader()
		if err == nil {
			buf, err = readInto(buf[:0], r)
		}
		if err != nil {
			if c.closing.Load() {
				return
			}
			c.ended(err) // before the state, so stats that count the drop give its reason
			if !c.spec.Redial {
				d.state.Store(devDropped)
				return
			}
			_ = d.conn.Close()
			d.state.Store(devRedialing)
			if !c.redial(d) {
				d.state.Store(devDropped)
				return
			}
			continue
		}
		if typ != websocket.TextMessage {
			continue
		}
		for line := range bytes.SplitSeq(buf, []byte{'\n'}) {
			c.count(d, line)
		}
	}
}

// redial connects d again after its connection ended, backing off as the
// SDK does (see ChildSpec.Redial), until it is back (true) or the child
// stops (false).
func (c *deviceChild) redial(d *childDev) bool {
	lo, hi := c.spec.RedialMin, c.spec.RedialMax
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi < lo {
		hi = max(lo, 30*time.Second)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for attempt := 0; ; attempt++ {
		ceiling := lo
		for i := 0; i < attempt && ceiling < hi; i++ {
			ceiling = min(2*ceiling, hi)
		}
		timer.Reset(time.Duration(mrand.Int64N(int64(ceiling) + 1)))
		select {
		case <-c.ctx.Done():
			return false
		case <-timer.C:
		}
		if c.closing.Load() {
			return false
		}
		d.attempts.Add(1)
		conn, code, err := c.dialOnce(c.ctx, d)
		if err == nil {
			d.conn = conn
			d.state.Store(devConnected)
			c.redials.Add(1)
			if c.closing.Load() {
				_ = conn.Close() // closeAll may have passed this device
			}
			return true
		}
		kind := "dial"
		if code != 0 {
			kind = "auth " + strconv.Itoa(code)
		}
		c.mu.Lock()
		c.redialFails[kind]++
		c.lastFail[kind] = time.Now()
		c.mu.Unlock()
	}
}

var probeMarker = []byte(`"service":"` + ProbeService + `"`)

// count counts line for d if it is a probe push.
func (c *deviceChild) count(d *childDev, line []byte) {
	if !bytes.Contains(line, probeMarker) {
		return
	}
	var m struct {
		Op     string `json:"op"`
		Values struct {
			Probe *int `json:"probe"`
		} `json:"values"`
	}
	if json.Unmarshal(line, &m) != nil || m.Op != "push" || m.Values.Probe == nil {
		c.noteErr("push", fmt.Sprintf("%s: bad probe push %.200s", d.SN, line))
		return
	}
	if p := *m.Values.Probe; p >= 0 && p < MaxProbes {
		d.probes[p].Add(1)
	}
}

func (c *deviceChild) ended(err error) {
	why := endReason(err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.endings) < 50 {
		c.endings[why]++
	} else {
		c.endings["(other)"]++
	}
}

func (c *deviceChild) noteErr(kind, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs[kind]) < childErrSample {
		c.errs[kind] = append(c.errs[kind], msg)
	}
}

// closeAll closes every device's connection (a normal close first),
// childClosers at a time.
func (c *deviceChild) closeAll() {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	var wg sync.WaitGroup
	for w := range childClosers {
		wg.Go(func() {
			for i := w; i < len(c.devs); i += childClosers {
				if d := c.devs[i]; d.state.Load() == devConnected {
					_ = d.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(100*time.Millisecond))
					_ = d.conn.Close()
				}
			}
		})
	}
	wg.Wait()
}

func (c *deviceChild) stats() ChildStats {
	s := ChildStats{
		PID: os.Getpid(), NoFile: c.noFile, Devices: len(c.devs), DroppedByURL: make([]int, len(c.spec.URLs)),
		DialRetries: c.retries.Load(), Unavailable: c.unavailable.Load(), DialDone: c.dialDone.Load(),
		DialSeconds: time.Duration(c.dialSeconds.Load()).Seconds(),
	}
	for _, d := range c.devs {
		switch d.state.Load() {
		case devConnected:
			s.Connected++
		case devFailed:
			s.Failed++
		case devDropped:
			s.Dropped++
			s.DroppedByURL[d.URL]++
		case devRedialing:
			s.Redialing++
		}
	}
	s.Redials = c.redials.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.redialFails) > 0 {
		s.RedialFailures = make(map[string]int, len(c.redialFails))
		s.LastFailure = make(map[string]time.Time, len(c.lastFail))
		for k, v := range c.redialFails {
			s.RedialFailures[k] = v
			s.LastFailure[k] = c.lastFail[k]
		}
	}
	if len(c.endings) > 0 {
		s.Endings = make(map[string]int, len(c.endings))
		for k, v := range c.endings {
			s.Endings[k] = v
		}
	}
	for kind, l := range c.errs {
		for _, e := range l {
			s.Errors = append(s.Errors, kind+": "+e)
		}
	}
	return s
}

func (c *deviceChild) check(pc ProbeCheck) ProbeResult {
	var r ProbeResult
	sample := func(l *[]string, sn string) {
		if len(*l) < childSample {
			*l = append(*l, sn)
		}
	}
	for _, d := range c.devs {
		n := int(d.probes[pc.Probe].Load())
		r.Pushes += int64(n)
		if pc.Type != "" && d.Type != pc.Type {
			if n > 0 {
				r.Unexpected++
				sample(&r.UnexpectedSample, d.SN)
			}
			continue
		}
		r.Expected++
		switch {
		case n == 0:
			r.Missing++
			state := "connected"
			if st := d.state.Load(); st != devConnected {
				r.MissingClosed++
				state = map[int32]string{devPending: "pending", devFailed: "failed", devDropped: "dropped"}[st]
			}
			sample(&r.MissingSample, fmt.Sprintf("%s (%s, %d dial attempts)", d.SN, state, d.attempts.Load()))
		case n == 1:
			r.Once++
		default:
			r.Dup++
			sample(&r.DupSample, d.SN)
		}
	}
	return r
}
