// Package wanproxy is a TCP proxy on loopback that stands in for a WAN
// link between NATS clusters in tests: it forwards every connection to one
// target, delays each direction by a fixed time, and can be cut (every
// connection closed, new ones refused), blackholed (silent, nothing
// closed) and healed on command.
//
//	p, err := wanproxy.New(wanproxy.Config{Target: "127.0.0.1:7222", Delay: 40 * time.Millisecond})
//	defer p.Close()
//	// point a gateway or leaf remote at p.Addr()
//	p.Cut()       // partition: connections closed
//	p.Heal()      // link back
//	p.Blackhole() // a silent link: nothing closed, nothing delivered
package wanproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned by operations on a closed proxy.
var ErrClosed = errors.New("wanproxy: closed")

// Config shapes a Proxy.
type Config struct {
	// Listen is the address to accept on (default 127.0.0.1:0).
	Listen string
	// Target is the address every accepted connection is forwarded to.
	Target string
	// Delay is added to each direction: a byte read from one side is
	// written to the other no sooner than Delay later.
	Delay time.Duration
	// ChunkBytes is the largest read forwarded as one piece (default
	// 32 KiB); QueueChunks the number of pieces in flight per direction
	// (default 256). Together they bound a connection's buffers; a full
	// queue stops reading, so TCP back-pressure reaches the sender.
	ChunkBytes, QueueChunks int
	// DialTimeout bounds the dial to Target (default 2 s).
	DialTimeout time.Duration
}

// Proxy forwards connections from its listener to the target with the
// configured delay. Its methods are safe for concurrent use.
type Proxy struct {
	cfg Config
	ln  net.Listener

	mu sync.Mutex
	// Guarded by mu.
	delay time.Duration
	cut   bool
	// hole is open (non-nil) while the proxy is blackholed; Heal closes
	// it, releasing every writer waiting on it.
	hole   chan struct{}
	closed bool
	conns  map[*link]struct{}
	// accepted counts connections forwarded, refused those closed at
	// once because the proxy was cut. Guarded by mu.
	accepted, refused int

	// wg owns every goroutine the proxy starts: the accept loop and each
	// link's pumps. Close waits for it.
	wg sync.WaitGroup
}

// link is one proxied connection: the accepted side and the dialled one.
type link struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{} // closed by close
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

// New listens and starts accepting. Close stops it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Target == "" {
		return nil, errors.New("wanproxy: no target")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 32 << 10
	}
	if cfg.QueueChunks <= 0 {
		cfg.QueueChunks = 256
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("wanproxy: negative delay %v", cfg.Delay)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("wanproxy: listen %s: %w", cfg.Listen, err)
	}
	p := &Proxy{cfg: cfg, ln: ln, delay: cfg.Delay, conns: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address the proxy accepts on (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the port the proxy accepts on.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetDelay changes the delay for data read from now on.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Cut closes every open connection and makes the proxy close each new one
// at once (the listener stays bound, so the port is not lost), until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Blackhole makes the link go silent without closing anything, like a WAN
// that stops carrying packets: data read waits in the proxy (and, once a
// direction's queue is full, in the sender's TCP buffers), new connections
// are accepted and forwarded as silently. Heal delivers what waited, in
// order, unless an end gave up on its connection meanwhile.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	if p.hole == nil {
		p.hole = make(chan struct{})
	}
	p.mu.Unlock()
}

// Heal ends a Cut or a Blackhole: new connections are forwarded again and
// held data flows.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	if p.hole != nil {
		close(p.hole)
		p.hole = nil
	}
	p.mu.Unlock()
}

// passable waits while the proxy is blackholed and reports whether l may
// still be written to (false once l is closed).
func (p *Proxy) passable(l *link) bool {
	p.mu.Lock()
	h := p.hole
	p.mu.Unlock()
	if h == nil {
		return true
	}
	select {
	case <-h:
		return true
	case <-l.done:
		return false
	}
}

// Stats are counters since New.
type Stats struct {
	// Open is the number of connections being forwarded now.
	Open int
	// Accepted counts connections forwarded, Refused those closed at
	// once while the proxy was cut (or the target did not answer).
	Accepted, Refused int
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Open: len(p.conns), Accepted: p.accepted, Refused: p.refused}
}

// Close stops accepting, closes every connection and waits for every
// goroutine of the proxy. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	links := p.takeLinksLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

// takeLinksLocked empties the connection set and returns what it held.
func (p *Proxy) takeLinksLocked() []*link {
	links := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		links = append(links, l)
	}
	clear(p.conns)
	return links
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // listener closed
		}
		p.mu.Lock()
		refuse := p.cut || p.closed
		if refuse {
			p.refused++
		}
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		// Dial outside the accept loop so a slow target does not hold
		// up other connections.
		p.wg.Add(1)
		go p.connect(c)
	}
}

// connect dials the target for the accepted conn c and starts the pumps.
func (p *Proxy) connect(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.cfg.Target, p.cfg.DialTimeout)
	if err != nil {
		_ = c.Close()
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
		return
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	p.mu.Lock()
	if p.cut || p.closed {
		p.refused++
		p.mu.Unlock()
		l.close()
		return
	}
	p.accepted++
	p.conns[l] = struct{}{}
	p.mu.Unlock()

	var pumps sync.WaitGroup
	pumps.Add(2)
	p.wg.Add(2)
	go func() { defer p.wg.Done(); defer pumps.Done(); p.pump(l, c, s) }()
	go func() { defer p.wg.Done(); defer pumps.Done(); p.pump(l, s, c) }()
	pumps.Wait()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

// chunk is a piece of data read at a time, due for writing at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pump copies from src to dst, each piece written no sooner than the
// delay after it was read. A reader and a writer run so that the delay
// does not throttle throughput; the queue between them is bounded. Either
// side failing closes the whole link.
func (p *Proxy) pump(l *link, src, dst net.Conn) {
	q := make(chan chunk, p.cfg.QueueChunks)
	var writer sync.WaitGroup
	writer.Add(1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer writer.Done()
		for ck := range q {
			if d := time.Until(ck.due); d > 0 {
				time.Sleep(d)
			}
			if !p.passable(l) {
				for range q {
				}
				return
			}
			if _, err := dst.Write(ck.b); err != nil {
				l.close()
				// Drain so the reader never blocks on a full queue.
				for range q {
				}
				return
			}
		}
	}()
	for {
		b := make([]byte, p.cfg.ChunkBytes)
		n, err := src.Read(b)
		if n > 0 {
			p.mu.Lock()
			d := p.delay
			p.mu.Unlock()
			q <- chunk{b: b[:n], due: time.Now().Add(d)}
		}
		if err != nil {
			break
		}
	}
	close(q)
	writer.Wait()
	l.close()
}
