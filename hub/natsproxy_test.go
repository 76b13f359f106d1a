package hub

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsProxy sits between one NATS client and its server, on loopback, to
// make JetStream slow in ways a test can count on. Stalled, it holds
// everything the server sends (the client's requests still reach the
// server and take effect; their answers wait), as a JetStream that stops
// answering for a while does. And it can act on a publish by subject: drop
// it (it never reaches the server, and the client waits for an answer in
// vain), or stall from it on (it takes effect, its answer waits).
type natsProxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	cond    *sync.Cond
	stalled bool              // Guarded by mu.
	rules   []*publishRule    // Guarded by mu.
	conns   map[net.Conn]bool // Guarded by mu.
	closed  bool              // Guarded by mu.
}

// publishRule acts on the next n publishes whose subject starts with
// prefix.
type publishRule struct {
	prefix string
	n      int
	drop   bool // else: forward it, and stall from it on
}

func newNATSProxy(t testing.TB, target string) *natsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &natsProxy{t: t, ln: ln, target: target, conns: make(map[net.Conn]bool)}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the address clients dial instead of the server's.
// proxiedServer starts a hub whose NATS connection goes through a proxy
// in front of a fresh in-process server, and returns the three.
func proxiedServer(t *testing.T, cfg Config) (*Server, *natsProxy, *server.Server) {
	t.Helper()
	ns := natstest.Run(t)
	px := newNATSProxy(t, ns.Addr().String())
	nc, err := nats.Connect(px.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return startTestServer(t, nc, cfg), px, ns
}

func (p *natsProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// stall holds what the server sends until resume.
func (p *natsProxy) stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

func (p *natsProxy) resume() {
	p.mu.Lock()
	p.stalled = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// dropPublishes drops the next n publishes to subjects starting with
// prefix.
func (p *natsProxy) dropPublishes(prefix string, n int) {
	p.mu.Lock()
	p.rules = append(p.rules, &publishRule{prefix: prefix, n: n, drop: true})
	p.mu.Unlock()
}

// stallAtPublish stalls (see stall) from the next publish to a subject
// starting with prefix on: that publish reaches the server, its answer
// waits.
func (p *natsProxy) stallAtPublish(prefix string) {
	p.mu.Lock()
	p.rules = append(p.rules, &publishRule{prefix: prefix, n: 1})
	p.mu.Unlock()
}

func (p *natsProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.stalled = false
	p.cond.Broadcast()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *natsProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *natsProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			defer server.Close()
			p.fromClient(client, server)
		}()
		go func() {
			defer p.wg.Done()
			defer client.Close()
			p.fromServer(server, client)
		}()
	}
}

// fromServer copies what the server sends, holding it while stalled.
func (p *natsProxy) fromServer(server, client net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.stalled && !p.closed {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// fromClient copies the client's protocol line by line, so that the rules
// can act on whole publishes (PUB and HPUB: a line, then its payload).
func (p *natsProxy) fromClient(client, server net.Conn) {
	r := bufio.NewReaderSize(client, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				if _, werr := server.Write(line); werr != nil {
					return
				}
				continue
			}
			return
		}
		frame := append([]byte(nil), line...)
		f := bytes.Fields(line)
		var subject []byte
		if len(f) >= 3 && (bytes.EqualFold(f[0], []byte("PUB")) || bytes.EqualFold(f[0], []byte("HPUB"))) {
			subject = f[1]
			size, perr := strconv.Atoi(string(f[len(f)-1]))
			if perr != nil {
				return
			}
			payload := make([]byte, size+2)
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			frame = append(frame, payload...)
		}
		if subject != nil && p.act(string(subject)) {
			continue // dropped
		}
		if _, err := server.Write(frame); err != nil {
			return
		}
	}
}

// act applies the first rule that matches a publish to subject, and
// reports whether the publish is dropped.
func (p *natsProxy) act(subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range p.rules {
		if len(subject) < len(r.prefix) || subject[:len(r.prefix)] != r.prefix {
			continue
		}
		if r.n--; r.n == 0 {
			p.rules = append(p.rules[:i], p.rules[i+1:]...)
		}
		if r.drop {
			return true
		}
		p.stalled = true
		return false
	}
	return false
}
