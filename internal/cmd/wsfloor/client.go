package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// clientEnv names the environment variable that turns the program into
// its own client side: it holds the clientConfig as JSON.
const clientEnv = "WSFLOOR_CLIENT"

// clientConfig is what the server side gives the client process.
type clientConfig struct {
	URL         string  `json:"url"`
	Clients     int     `json:"clients"`
	ConnectRate float64 `json:"connect_rate"`
	ConnectConc int     `json:"connect_concurrency"`
	SrcIPs      string  `json:"src_ips"`
}

// clientReport is one line the client writes on stdout: after connecting
// (Ready), for each "count" and for "done" (Final, with the latencies).
type clientReport struct {
	Ready          bool     `json:"ready,omitempty"`
	Final          bool     `json:"final,omitempty"`
	Connected      int      `json:"connected"`
	ConnectErrors  int      `json:"connect_errors"`
	ErrorSample    []string `json:"error_sample,omitempty"`
	ConnectSeconds float64  `json:"connect_seconds"`
	Delivered      int64    `json:"delivered"`
	// Unparsed counts frames without "t" and "s": none is expected.
	Unparsed int64    `json:"unparsed"`
	Dropped  int64    `json:"dropped"`
	Latency  *Latency `json:"latency,omitempty"`
	CPUS     float64  `json:"cpu_s"`
	RSSKiB   int64    `json:"rss_kib"`
}

// floorClient holds the client process's connections and counters.
type floorClient struct {
	hist      histogram
	delivered atomic.Int64
	unparsed  atomic.Int64
	dropped   atomic.Int64
	stopping  atomic.Bool
	readers   sync.WaitGroup

	mu    sync.Mutex
	conns []*websocket.Conn // Guarded by mu.
}

// runClient is the client process: it opens cfg.Clients WebSockets, reads
// and counts every frame, and answers the server side's commands (one a
// line on in: count, done) with one JSON line each on out. It ends after
// done, or when in closes (the server side is gone).
func runClient(ctx context.Context, cfg clientConfig, in io.Reader, out io.Writer) error {
	ips, err := parseIPRange(cfg.SrcIPs)
	if err != nil {
		return err
	}
	raiseNofile()
	fc := &floorClient{}
	enc := json.NewEncoder(out)
	ready := fc.connect(ctx, cfg, ips)
	if err := enc.Encode(ready); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch cmd := strings.TrimSpace(sc.Text()); cmd {
		case "count":
			err = enc.Encode(clientReport{Delivered: fc.delivered.Load(), Unparsed: fc.unparsed.Load(), Dropped: fc.dropped.Load()})
		case "done":
			fc.close()
			return enc.Encode(clientReport{
				Final: true, Connected: ready.Connected, ConnectErrors: ready.ConnectErrors,
				Delivered: fc.delivered.Load(), Unparsed: fc.unparsed.Load(), Dropped: fc.dropped.Load(),
				Latency: fc.hist.latency(), CPUS: selfCPU(), RSSKiB: selfRSS(),
			})
		default:
			err = fmt.Errorf("client: unknown command %q", cmd)
		}
		if err != nil {
			fc.close()
			return err
		}
	}
	fc.close()
	return sc.Err()
}

// connect dials every client at the configured rate, with at most
// ConnectConc handshakes in flight, source addresses taken round-robin.
func (fc *floorClient) connect(ctx context.Context, cfg clientConfig, ips []net.IP) clientReport {
	dialers := make([]websocket.Dialer, len(ips))
	for i, ip := range ips {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		dialers[i] = websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 15 * time.Second,
			ReadBufferSize: 2048, WriteBufferSize: 1024}
	}
	var (
		mu      sync.Mutex
		errs    int
		samples = map[string]int{}
		dials   sync.WaitGroup
	)
	sem := make(chan struct{}, max(cfg.ConnectConc, 1))
	interval := time.Duration(float64(time.Second) / max(cfg.ConnectRate, 1))
	t0 := time.Now()
	for i := range cfg.Clients {
		if ctx.Err() != nil {
			break
		}
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		dials.Add(1)
		go func(d *websocket.Dialer) {
			defer dials.Done()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			c, resp, err := d.DialContext(dctx, cfg.URL, nil)
			cancel()
			<-sem
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
			if err != nil {
				mu.Lock()
				errs++
				if k := err.Error(); len(samples) < 8 || samples[k] > 0 {
					samples[k]++
				}
				mu.Unlock()
				return
			}
			fc.mu.Lock()
			fc.conns = append(fc.conns, c)
			fc.readers.Add(1)
			fc.mu.Unlock()
			go fc.read(c)
		}(&dialers[i%len(dialers)])
	}
	dials.Wait()
	fc.mu.Lock()
	n := len(fc.conns)
	fc.mu.Unlock()
	var sample []string
	for k, v := range samples {
		sample = append(sample, fmt.Sprintf("%dx %s", v, k))
	}
	sort.Strings(sample)
	return clientReport{Ready: true, Connected: n, ConnectErrors: errs, ErrorSample: sample,
		ConnectSeconds: time.Since(t0).Seconds()}
}

// read counts the frames of one connection until it fails or is closed.
// One frame is one push, as the hub sends them.
func (fc *floorClient) read(c *websocket.Conn) {
	defer fc.readers.Done()
	buf := make([]byte, 0, 1024)
	for {
		var err error
		if buf, err = readFrame(c, buf); err != nil {
			if !fc.stopping.Load() {
				fc.dropped.Add(1)
			}
			return
		}
		ts, _, ok := parseTS(buf)
		if !ok {
			fc.unparsed.Add(1)
			continue
		}
		fc.hist.record(time.Now().UnixNano() - ts)
		fc.delivered.Add(1)
	}
}

// close closes every connection and waits (at most 10 s) for the readers.
func (fc *floorClient) close() {
	fc.stopping.Store(true)
	fc.mu.Lock()
	conns := fc.conns
	fc.conns = nil
	fc.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	done := make(chan struct{})
	go func() { fc.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// readFrame reads one whole data frame into buf (reused, grown as needed).
func readFrame(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.NextReader()
	if err != nil {
		return buf, err
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// selfRSS is this process's resident set in KiB.
func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var v int64
			fmt.Sscan(f[1], &v)
			return v
		}
	}
	return 0
}
