package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
)

// Tests of the socket writer (writer.go) on real loopback sockets: frames
// sent straight to a session's wsConn, read by a client that parses every
// byte (rawClient). Where a test needs the socket to fill, the server's
// socket buffer is made small: a client that stops reading then stops the
// server's writes once its own receive buffer is full.

// startWriterNode runs a node (on a hub on its own nats-server) with cfg,
// its hub and sessions set up for sending to by hand: no auth timeout, no
// caps on unauthenticated sessions, and no pings unless cfg asks.
func startWriterNode(tb testing.TB, cfg Config) (*Node, string) {
	tb.Helper()
	ns := natstest.Run(tb)
	srv, err := hub.New(hub.Config{
		Conn: natstest.Connect(tb, ns), NodeID: "writer", MasterSecret: []byte("writer-master-secret-0123456789"),
		AdminPassword: "writer-pw", BcryptCost: 4, AuthTimeout: time.Hour,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	cfg.Hub = srv
	cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerIP = -1, -1
	if cfg.PingInterval == 0 {
		cfg.PingInterval, cfg.PongWait = time.Hour, 2*time.Hour
	}
	nd, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(nd.Handler())
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := nd.Shutdown(ctx); err != nil {
			tb.Errorf("node shutdown: %v", err)
		}
		ts.Close()
		_ = srv.Shutdown(ctx)
	})
	return nd, wsURLOf(ts.URL)
}

// dialSession connects a rawClient and returns it with the wsConn of its
// session on the node, the node's only session. With small set, the
// server's socket buffer is made as small as the kernel allows, so that
// a client that stops reading stops the server's writes after its own
// receive buffer.
func dialSession(t *testing.T, nd *Node, wsURL string, small bool) (*rawClient, *wsConn) {
	t.Helper()
	rc := dialRaw(t, wsURL)
	local := rc.nc.LocalAddr().String()
	var c *wsConn
	natstest.Eventually(t, 10*time.Second, func() error {
		// Once the hub has the session, its connect handler is done.
		if nd.hub.SessionCount() == 0 {
			return errors.New("no session yet")
		}
		sessions, err := nd.melody.Sessions()
		if err != nil {
			return err
		}
		for _, s := range sessions {
			if sc := connOf(s); sc.raw.RemoteAddr().String() == local {
				c = sc
				return nil
			}
		}
		return fmt.Errorf("no session from %s", local)
	})
	if small {
		if err := c.raw.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
			t.Fatal(err)
		}
	}
	return rc, c
}

// seqMsg is message seq of sender from, padded to size bytes.
func seqMsg(from, seq, size int) []byte {
	m := []byte(`{"from":` + strconv.Itoa(from) + `,"seq":` + strconv.Itoa(seq) + `,"pad":"`)
	if pad := size - len(m) - 2; pad > 0 {
		m = append(m, strings.Repeat("x", pad)...)
	}
	return append(m, `"}`...)
}

// parseSeq is the inverse of seqMsg, checking the padding is intact.
func parseSeq(m []byte) (from, seq int, err error) {
	var rest string
	if _, err := fmt.Sscanf(string(m), `{"from":%d,"seq":%d,"pad":"%s`, &from, &seq, &rest); err != nil {
		return 0, 0, fmt.Errorf("message %.60q: %v", m, err)
	}
	if !strings.HasSuffix(rest, `"}`) || strings.Trim(rest[:len(rest)-2], "x") != "" {
		return 0, 0, fmt.Errorf("message %.60q: damaged", m)
	}
	return from, seq, nil
}

// queued reports whether frames wait for the socket: with the node's
// burst window 0, only because the socket did not take a frame at once.
func queued(c *wsConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rest != nil || len(c.batch) > 0
}

// fillSocket sends messages of 1000 bytes (sender 0, from 0) to a client
// that does not read until the socket is full and they queue, and returns
// how many it sent.
func fillSocket(t *testing.T, c *wsConn) int {
	t.Helper()
	sent := 0
	for ; sent < 20000 && !queued(c); sent++ {
		if err := c.Send(seqMsg(0, sent, 1000)); err != nil {
			t.Fatalf("send %d: %v", sent, err)
		}
	}
	if !queued(c) {
		t.Fatalf("%d frames of 1000 bytes sent to a client that does not read, and the socket still takes them", sent)
	}
	return sent
}

// sendSeqs sends n more messages of 1000 bytes, from from on, and returns
// from+n.
func sendSeqs(t *testing.T, c *wsConn, from, n int) int {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := c.Send(seqMsg(0, i, 1000)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	return from + n
}

// readSeqs reads text frames until the client has had the messages
// 0..want-1 of sender 0, whole and in order. A frame of another kind, or a
// message out of order, fails t.
func readSeqs(t *testing.T, rc *rawClient, want int) {
	t.Helper()
	_ = rc.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	next := 0
	for next < want {
		op, payload, err := rc.next()
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", next, want, err)
		}
		if op != websocket.TextMessage {
			t.Fatalf("after %d of %d messages: frame of opcode %d", next, want, op)
		}
		for m := range bytes.SplitSeq(payload, []byte{'\n'}) {
			_, seq, err := parseSeq(m)
			if err != nil {
				t.Fatal(err)
			}
			if seq != next {
				t.Fatalf("message %d where %d was due", seq, next)
			}
			next++
		}
	}
}

// readSeqsToClose reads frames until the close frame, whose payload it
// returns with how many messages of sender 0 came before it, whole and in
// order from 0. A message out of order, or no close frame, fails t.
func readSeqsToClose(t *testing.T, rc *rawClient) (int, []byte) {
	t.Helper()
	_ = rc.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	next := 0
	for {
		op, payload, err := rc.next()
		if err != nil {
			t.Fatalf("after %d messages, no close frame: %v", next, err)
		}
		if op == websocket.CloseMessage {
			return next, payload
		}
		for m := range bytes.SplitSeq(payload, []byte{'\n'}) {
			if _, seq, err := parseSeq(m); err != nil || seq != next {
				t.Fatalf("message %d (%v) where %d was due", seq, err, next)
			}
			next++
		}
	}
}

// A client that stops reading fills the socket: the frame the socket took
// only part of is finished, and the frames after it, which waited, follow
// whole and in order once the client reads again; the session goes on.
func TestWriterSocketFullThenDrains(t *testing.T) {
	t.Parallel()
	nd, wsURL := startWriterNode(t, Config{})
	nd.burst = 0 // every frame tries the socket itself
	rc, c := dialSession(t, nd, wsURL, true)

	sent := fillSocket(t, c)
	t.Logf("the socket was full after %d frames", sent)
	// More behind them, within the queue's bound.
	sent = sendSeqs(t, c, sent, 200)
	readSeqs(t, rc, sent)
	// Drained, the session writes at once again.
	natstest.Eventually(t, 10*time.Second, func() error {
		if queued(c) {
			return errors.New("frames still queued")
		}
		return nil
	})
	if err := c.Send(seqMsg(0, sent, 100)); err != nil {
		t.Fatal(err)
	}
	readOneSeq(t, rc, sent)
}

// readOneSeq reads one frame, which must hold message seq alone.
func readOneSeq(t *testing.T, rc *rawClient, seq int) {
	t.Helper()
	op, payload, err := rc.next()
	if err != nil || op != websocket.TextMessage {
		t.Fatalf("next frame: opcode %d, %v", op, err)
	}
	if _, got, err := parseSeq(payload); err != nil || got != seq {
		t.Fatalf("next message %d (%v), want %d", got, err, seq)
	}
}

// A client that stops reading for good overflows the queue: Send says
// ErrQueueFull, and the close the hub then makes (4008) comes right after
// the frames already on the wire, the last of them finished first, so the
// client reads a valid stream: a prefix of what was sent, then the close.
func TestWriterOverflowClosesAfterWholeFrames(t *testing.T) {
	t.Parallel()
	nd, wsURL := startWriterNode(t, Config{QueueBytes: 64 << 10})
	nd.burst = 0
	rc, c := dialSession(t, nd, wsURL, true)

	sent := 0
	var err error
	for ; sent < 20000; sent++ {
		if err = c.Send(seqMsg(0, sent, 1000)); err != nil {
			break
		}
	}
	if !errors.Is(err, hub.ErrQueueFull) {
		t.Fatalf("after %d frames to a client that does not read: %v, want ErrQueueFull", sent, err)
	}
	c.Close(wire.CloseSlowConsumer, "slow consumer") // what the hub does on ErrQueueFull

	next, closing := readSeqsToClose(t, rc)
	if code, _ := closeCode(closing); code != wire.CloseSlowConsumer {
		t.Fatalf("close %d, want %d", code, wire.CloseSlowConsumer)
	}
	if next >= sent {
		t.Fatalf("%d messages read, all %d sent: the queue was not dropped", next, sent)
	}
	t.Logf("%d frames sent before the overflow, %d read before the close", sent, next)
}

// A close after queued data goes out after that data: every message queued
// before the close reaches the client, whole and in order, then the close.
func TestWriterCloseAfterQueuedData(t *testing.T) {
	t.Parallel()
	nd, wsURL := startWriterNode(t, Config{})
	nd.burst = 0
	rc, c := dialSession(t, nd, wsURL, true)

	sent := fillSocket(t, c)
	sent = sendSeqs(t, c, sent, 100)
	if !queued(c) {
		t.Fatal("nothing queued before the close")
	}
	c.Close(wire.CloseRestart, "node restarting")
	if err := c.Send(seqMsg(0, sent, 1000)); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("send after close: %v, want ErrClosed", err)
	}
	readSeqs(t, rc, sent)
	op, payload, err := rc.next()
	if err != nil || op != websocket.CloseMessage {
		t.Fatalf("after the data: opcode %d, %v, want the close", op, err)
	}
	if code, reason := closeCode(payload); code != wire.CloseRestart || reason != "node restarting" {
		t.Fatalf("close %d %q", code, reason)
	}
}

// Pings (melody's, every millisecond), pongs (the read pump's, to the
// client's pings) and data frames from four senders at once, of every
// header length, through a socket that fills again and again: the client
// parses every frame, and every sender's messages arrive whole and in
// order. Once with frames coalesced in bursts, once with every frame
// trying the socket itself, so that many are cut short by a full socket.
func TestWriterControlFramesBetweenDataFrames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		burst time.Duration
	}{{"bursts", burstWindow}, {"every frame", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testControlFrames(t, tc.burst)
		})
	}
}

func testControlFrames(t *testing.T, burst time.Duration) {
	nd, wsURL := startWriterNode(t, Config{PingInterval: time.Millisecond, PongWait: time.Minute, QueueBytes: 64 << 20})
	nd.burst = burst
	rc, c := dialSession(t, nd, wsURL, true)

	const senders, each = 4, 150
	sizes := []int{40, 125, 126, 127, 1000, 4000, 65535, 65536, 70000}
	var wg sync.WaitGroup
	errc := make(chan error, senders)
	for from := range senders {
		wg.Go(func() {
			for seq := range each {
				if err := c.Send(seqMsg(from, seq, sizes[(seq+from)%len(sizes)])); err != nil {
					errc <- fmt.Errorf("sender %d, message %d: %v", from, seq, err)
					return
				}
			}
		})
	}
	defer wg.Wait()

	_ = rc.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	next := make([]int, senders)
	got, pings, pongs, frames := 0, 0, 0, 0
	for got < senders*each {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		op, payload, err := rc.next()
		if err != nil {
			t.Fatalf("after %d frames, %d messages: %v", frames, got, err)
		}
		frames++
		switch op {
		case websocket.PingMessage:
			pings++
		case websocket.PongMessage:
			pongs++
		case websocket.TextMessage:
			for m := range bytes.SplitSeq(payload, []byte{'\n'}) {
				from, seq, err := parseSeq(m)
				if err != nil {
					t.Fatal(err)
				}
				if from >= senders || seq != next[from] {
					t.Fatalf("sender %d: message %d where %d was due", from, seq, next[from])
				}
				next[from]++
				got++
			}
		default:
			t.Fatalf("frame of opcode %d", op)
		}
		if frames%2 == 0 {
			if err := rc.writeFrame(websocket.PingMessage, []byte("p"+strconv.Itoa(frames))); err != nil {
				t.Fatalf("client ping: %v", err)
			}
		}
	}
	// Control frames keep coming after the data, and still parse.
	for pings == 0 || pongs == 0 {
		if err := rc.writeFrame(websocket.PingMessage, []byte("last")); err != nil {
			t.Fatalf("client ping: %v", err)
		}
		op, _, err := rc.next()
		if err != nil {
			t.Fatalf("after the data (%d pings, %d pongs): %v", pings, pongs, err)
		}
		switch op {
		case websocket.PingMessage:
			pings++
		case websocket.PongMessage:
			pongs++
		default:
			t.Fatalf("frame of opcode %d after the data", op)
		}
	}
	t.Logf("%d frames: %d messages, %d pings, %d pongs", frames, got, pings, pongs)
}

// A close frame ends the stream: when the client closes while frames wait,
// the read pump's answer takes the socket between two frames, and nothing
// follows it, however many frames still waited.
func TestWriterNothingAfterClose(t *testing.T) {
	t.Parallel()
	nd, wsURL := startWriterNode(t, Config{})
	nd.burst = 0
	rc, c := dialSession(t, nd, wsURL, true)

	sent := fillSocket(t, c)
	sent = sendSeqs(t, c, sent, 200)
	if err := rc.writeFrame(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")); err != nil {
		t.Fatal(err)
	}
	next, _ := readSeqsToClose(t, rc)
	if op, _, err := rc.next(); err == nil {
		t.Fatalf("a frame of opcode %d after the close (%d of %d messages before it)", op, next, sent)
	}
	t.Logf("%d of %d messages before the close", next, sent)
}
