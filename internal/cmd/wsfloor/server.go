package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fleethub/fleethub/internal/loadtest"
)

// config is one floor run.
type config struct {
	Scenario    string // broadcast or unicast
	Clients     int
	Rate        float64 // messages per second
	Duration    time.Duration
	Payload     int // benchmark payload bytes, as wsload's -payload
	ConnectRate float64
	ConnectConc int
	SrcIPs      string
	Warmup      time.Duration // between connecting and publishing
	Drain       time.Duration // longest wait for deliveries after the last send
	Stall       time.Duration // the drain ends after this long without progress
	Seed        int64
	CPUProfile  string // write the server's CPU profile of the publish window and drain here
}

// floorServer accepts the WebSockets and keeps their hijacked connections.
type floorServer struct {
	upgrader websocket.Upgrader
	mu       sync.Mutex
	conns    []net.Conn // Guarded by mu.
	closed   bool       // Guarded by mu.
}

// ServeHTTP upgrades and keeps only the raw connection: nothing reads it
// and nothing but the publish loop writes it.
func (s *floorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := ws.NetConn()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return
	}
	s.conns = append(s.conns, c)
}

func (s *floorServer) snapshot() []net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Conn(nil), s.conns...)
}

// closeAll closes every connection (which also ends a write blocked on a
// stalled client) and refuses later ones.
func (s *floorServer) closeAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns, s.closed = nil, true
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// clientProc is the client process and its command channel.
type clientProc struct {
	cmd     *exec.Cmd
	in      *bufio.Writer
	inFile  interface{ Close() error }
	lines   chan []byte
	scanned chan struct{} // closed when the stdout reader ends
}

// startClient re-executes this program as the client side.
func startClient(cfg clientConfig) (*clientProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), clientEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	// It dies with us whatever happens.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &clientProc{cmd: cmd, in: bufio.NewWriter(stdin), inFile: stdin,
		lines: make(chan []byte, 4), scanned: make(chan struct{})}
	// Owned by stop, which waits for it: it ends when the client's stdout
	// closes.
	go func() {
		defer close(p.scanned)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	return p, nil
}

// next waits for the client's next report.
func (p *clientProc) next(ctx context.Context) (clientReport, error) {
	var r clientReport
	select {
	case line, ok := <-p.lines:
		if !ok {
			return r, errors.New("client process ended")
		}
		return r, json.Unmarshal(line, &r)
	case <-ctx.Done():
		return r, ctx.Err()
	}
}

// ask sends one command and waits for its answer.
func (p *clientProc) ask(ctx context.Context, cmd string) (clientReport, error) {
	if _, err := p.in.WriteString(cmd + "\n"); err != nil {
		return clientReport{}, err
	}
	if err := p.in.Flush(); err != nil {
		return clientReport{}, err
	}
	return p.next(ctx)
}

// stop closes the client's stdin (it ends on that), waits for it (killing
// it after 15 s) and for the stdout reader.
func (p *clientProc) stop() {
	p.inFile.Close()
	exited := make(chan struct{})
	go func() {
		for range p.lines { // let the reader finish
		}
		<-p.scanned
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
	}
	_ = p.cmd.Wait()
}

// run is one floor run: the server in this process, the clients in
// another; it returns the result in wsload's shape.
func run(ctx context.Context, cfg config) (res *Result, err error) {
	res = &Result{
		Target: "floor", TargetVersion: "wsfloor " + runtime.Version(), Scenario: cfg.Scenario,
		Clients: cfg.Clients, Rate: cfg.Rate, DurationS: cfg.Duration.Seconds(), PayloadBytes: cfg.Payload,
		StartedAt: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
		ConnectRateLimit: cfg.ConnectRate,
	}
	switch cfg.Scenario {
	case "broadcast", "unicast":
	default:
		return res, fmt.Errorf("unknown scenario %q (want broadcast or unicast)", cfg.Scenario)
	}
	if cfg.Clients < 1 || cfg.Rate <= 0 || cfg.Duration <= 0 {
		return res, fmt.Errorf("need clients >= 1, rate > 0 and duration > 0 (have %d, %g, %s)", cfg.Clients, cfg.Rate, cfg.Duration)
	}
	res.RlimitNofile = raiseNofile()
	if res.RlimitNofile < uint64(cfg.Clients)+1024 {
		res.Notes = append(res.Notes, fmt.Sprintf("RLIMIT_NOFILE %d is below clients+1024", res.RlimitNofile))
	}
	fr := newFramer(cfg.Payload)
	sample, err := fr.frame(time.Now().UnixNano(), 1)
	if err != nil {
		return res, err
	}
	res.FrameBytes = len(sample)
	res.TargetOptions = map[string]string{
		"frame":  fmt.Sprintf("one unmasked text frame of %d bytes per push: the hub's push envelope (wire.EncodePush) around the benchmark payload", len(sample)),
		"writes": "one net.Conn.Write (write(2)) per frame per socket, from one goroutine; no reader, no deadline, no queue",
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	fs := &floorServer{upgrader: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}}
	hs := &http.Server{Handler: fs, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	var serving sync.WaitGroup
	serving.Add(1)
	go func() {
		defer serving.Done()
		_ = hs.Serve(ln)
	}()
	defer func() {
		hs.Close() // closes the listener; hijacked connections are ours
		serving.Wait()
		fs.closeAll()
	}()
	// A cancelled run unblocks a write held by a stalled client.
	stopWatch := context.AfterFunc(ctx, fs.closeAll)
	defer stopWatch()

	mem0 := selfRSS()
	cpuC0 := selfCPU()
	cl, err := startClient(clientConfig{URL: "ws://" + ln.Addr().String() + "/", Clients: cfg.Clients,
		ConnectRate: cfg.ConnectRate, ConnectConc: cfg.ConnectConc, SrcIPs: cfg.SrcIPs})
	if err != nil {
		return res, fmt.Errorf("client process: %w", err)
	}
	defer cl.stop()
	ready, err := cl.next(ctx)
	if err != nil {
		return res, fmt.Errorf("client process: %w", err)
	}
	res.Connected, res.ConnectErrors, res.ConnectErrorSample = ready.Connected, ready.ConnectErrors, ready.ErrorSample
	res.ConnectSeconds = ready.ConnectSeconds
	if ready.ConnectSeconds > 0 {
		res.ConnectRate = float64(ready.Connected) / ready.ConnectSeconds
	}
	if ready.Connected == 0 {
		return res, fmt.Errorf("no client could connect; first errors: %v", ready.ErrorSample)
	}
	// Every connection the client has is on our side once its upgrade
	// handler has returned; that is soon after the client's handshake.
	deadline := time.Now().Add(10 * time.Second)
	for len(fs.snapshot()) < ready.Connected {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, fmt.Errorf("server holds %d connections, client has %d", len(fs.snapshot()), ready.Connected)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.ConnectServerCPUS = selfCPU() - cpuC0

	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	conns := fs.snapshot()
	res.RSSDeltaKiB = selfRSS() - mem0
	res.BytesPerConn = float64(res.RSSDeltaKiB*1024) / float64(len(conns))

	total := max(int64(cfg.Rate*cfg.Duration.Seconds()), 1)
	clientPID := cl.cmd.Process.Pid
	cpu0, clientCPU0, sys0 := selfCPU(), clientCPU(clientPID), systemCPU()
	if cfg.CPUProfile != "" {
		stopProfile, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return res, err
		}
		defer stopProfile()
	}
	tp := time.Now()
	sent, writeErrs := publish(ctx, cfg, fr, conns, total, tp)
	pubDur := time.Since(tp).Seconds()
	res.Sent = sent
	res.PublishRate = float64(sent) / pubDur
	if writeErrs > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d writes failed (their connections were skipped afterwards)", writeErrs))
	}
	if cfg.Scenario == "unicast" {
		res.Expected = sent
	} else {
		res.Expected = sent * int64(len(conns))
	}

	// Drain: until everything arrived, or no progress for Stall, or Drain.
	last, lastChange, lastDelivery := int64(-1), time.Now(), time.Now()
	drainEnd := time.Now().Add(cfg.Drain)
	var count clientReport
	for time.Now().Before(drainEnd) {
		if count, err = cl.ask(ctx, "count"); err != nil {
			return res, fmt.Errorf("client process: %w", err)
		}
		if count.Delivered >= res.Expected {
			lastDelivery = time.Now()
			break
		}
		if count.Delivered != last {
			last, lastChange = count.Delivered, time.Now()
			lastDelivery = lastChange
		} else if time.Since(lastChange) > cfg.Stall {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.WindowS = max(lastDelivery.Sub(tp).Seconds(), pubDur)
	res.ServerCPUS = selfCPU() - cpu0
	pprof.StopCPUProfile()
	res.LoadToolCPUS = clientCPU(clientPID) - clientCPU0
	if sys1 := systemCPU(); sys1.Total > sys0.Total {
		res.MachineBusyPct = 100 * (sys1.Task + sys1.IRQ - sys0.Task - sys0.IRQ) / (sys1.Total - sys0.Total)
		res.OtherCPUS = max(0, (sys1.Task-sys0.Task)-res.ServerCPUS-res.LoadToolCPUS)
		res.KernelIRQS = sys1.IRQ - sys0.IRQ
		res.StealS = sys1.Steal - sys0.Steal
	}

	final, err := cl.ask(ctx, "done")
	if err != nil {
		return res, fmt.Errorf("client process: %w", err)
	}
	res.Delivered = final.Delivered
	res.Lost = max(res.Expected-res.Delivered, 0)
	if final.Delivered > res.Expected {
		res.Notes = append(res.Notes, fmt.Sprintf("%d more deliveries than expected", final.Delivered-res.Expected))
	}
	res.Unparsed = final.Unparsed
	res.DroppedAfterConnect = int(final.Dropped)
	res.LoadToolRSSKiB = final.RSSKiB
	res.Latency = final.Latency
	res.DeliveriesPerSec = float64(res.Delivered) / res.WindowS
	if res.Delivered > 0 {
		res.ServerCPUPerMillion = res.ServerCPUS / (float64(res.Delivered) / 1e6)
	}
	if res.Sent < total {
		res.Notes = append(res.Notes, "publisher sent "+strconv.FormatInt(res.Sent, 10)+" of "+strconv.FormatInt(total, 10)+" planned messages")
	}
	return res, nil
}

// publish sends total messages at cfg.Rate from this goroutine, paced as
// wsload paces its publisher: broadcast writes each frame to every
// connection, unicast to one chosen at random. A connection whose write
// fails is skipped from then on. It returns the messages sent and the
// writes that failed.
func publish(ctx context.Context, cfg config, fr *framer, conns []net.Conn, total int64, tp time.Time) (sent, writeErrs int64) {
	rng := rand.New(rand.NewSource(cfg.Seed))
	live := append([]net.Conn(nil), conns...)
	for seq := int64(1); seq <= total && ctx.Err() == nil; seq++ {
		due := tp.Add(time.Duration(float64(seq-1) / cfg.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		frame, err := fr.frame(time.Now().UnixNano(), seq)
		if err != nil {
			writeErrs++
			continue
		}
		if cfg.Scenario == "unicast" {
			i := rng.Intn(len(live))
			if live[i] == nil {
				writeErrs++
				continue
			}
			if _, err := live[i].Write(frame); err != nil {
				live[i] = nil
				writeErrs++
				continue
			}
		} else {
			for i, c := range live {
				if c == nil {
					continue
				}
				if _, err := c.Write(frame); err != nil {
					live[i] = nil
					writeErrs++
				}
			}
		}
		sent++
	}
	return sent, writeErrs
}

// startCPUProfile profiles this process into path until the returned
// function (or pprof.StopCPUProfile) is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// clientCPU is the client process's CPU seconds; a vanished client reads
// as 0 s.
func clientCPU(pid int) float64 {
	d, err := loadtest.CPUTime(pid)
	if err != nil {
		return 0
	}
	return d.Seconds()
}
