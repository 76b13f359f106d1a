package wanproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer accepts on loopback and echoes every line back, until the
// test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func start(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// roundTrip writes a line on c and reads it back, returning the time taken.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader) time.Duration {
	t.Helper()
	t0 := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo: %q, %v", line, err)
	}
	return time.Since(t0)
}

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDelayAddedEachWay(t *testing.T) {
	const delay = 40 * time.Millisecond
	p := start(t, Config{Target: echoServer(t), Delay: delay})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	best := time.Hour
	for range 5 {
		best = min(best, roundTrip(t, c, r))
	}
	// A round trip crosses the proxy twice: at least 2×delay, and on
	// loopback not much more (the bound is loose for a loaded machine).
	if best < 2*delay || best > 2*delay+150*time.Millisecond {
		t.Fatalf("best round trip %v, want about %v", best, 2*delay)
	}
	t.Logf("round trip through a %v proxy: best of 5 %v", delay, best)

	p.SetDelay(0)
	best = time.Hour
	for range 5 {
		best = min(best, roundTrip(t, c, r))
	}
	if best >= 2*delay {
		t.Fatalf("round trip %v after SetDelay(0)", best)
	}
}

func TestThroughputNotThrottledByDelay(t *testing.T) {
	// 4 MiB through a 40 ms proxy: pieces travel pipelined, so the copy
	// takes about one delay, not one delay per piece.
	p := start(t, Config{Target: echoServer(t), Delay: 40 * time.Millisecond})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 4 << 20
	t0 := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.CopyN(io.Discard, c, size); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("4 MiB took %v", d)
	} else {
		t.Logf("4 MiB echoed through a 40 ms proxy in %v", d)
	}
}

func TestCutClosesAndRefusesHealAccepts(t *testing.T) {
	p := start(t, Config{Target: echoServer(t), Delay: 5 * time.Millisecond})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r)
	if s := p.Stats(); s.Open != 1 || s.Accepted != 1 {
		t.Fatalf("stats %+v", s)
	}

	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read after cut: %v, want EOF or reset", err)
	}
	// A new connection is accepted by the kernel and closed at once.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read on a connection made while cut: %v", err)
	}
	c2.Close()
	eventually(t, 5*time.Second, func() error {
		if s := p.Stats(); s.Open != 0 || s.Refused != 1 {
			return errors.New("not yet")
		}
		return nil
	})

	p.Heal()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	roundTrip(t, c3, bufio.NewReader(c3))
}

func TestCloseWaitsAndIsIdempotent(t *testing.T) {
	p, err := New(Config{Target: echoServer(t), Delay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, bufio.NewReader(c))
		cs = append(cs, c)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Open != 0 {
		t.Fatalf("open after close: %+v", s)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("still accepting after Close")
	}
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection open after Close")
		}
	}
}

func TestUnreachableTargetRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := start(t, Config{Target: dead})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a proxy with no target")
	}
	eventually(t, 5*time.Second, func() error {
		if p.Stats().Refused != 1 {
			return errors.New("not counted")
		}
		return nil
	})
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

func TestBlackholeHoldsDataUntilHeal(t *testing.T) {
	p := start(t, Config{Target: echoServer(t)})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r)

	p.Blackhole()
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back while the link is silent, and nothing is closed.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("data crossed a blackholed link")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read on a blackholed link: %v, want a timeout", err)
	}
	if s := p.Stats(); s.Open != 1 {
		t.Fatalf("stats while blackholed: %+v", s)
	}
	p.Heal()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("after heal: %q, %v", line, err)
	}
}

func TestCloseWhileBlackholed(t *testing.T) {
	p, err := New(Config{Target: echoServer(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, bufio.NewReader(c))
	p.Blackhole()
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a blackholed link")
	}
}
