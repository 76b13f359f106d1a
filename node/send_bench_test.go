package node

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
)

// sendBench is a node with n real loopback WebSocket sessions, each read
// by its client in a goroutine of its own, and the wsConn of each.
type sendBench struct {
	conns []*wsConn
	got   atomic.Int64 // messages received by all the clients
	want  atomic.Int64 // the count a waiter waits for
	sig   chan struct{}
}

func newSendBench(b *testing.B, n int) *sendBench {
	b.Helper()
	nd, wsURL := startWriterNode(b, Config{QueueBytes: 64 << 20})
	sb := &sendBench{sig: make(chan struct{}, 1)}
	for range n {
		go sb.read(dialRaw(b, wsURL))
	}
	natstest.Eventually(b, 30*time.Second, func() error {
		if got := nd.melody.Len(); got != n {
			return fmt.Errorf("%d sessions, want %d", got, n)
		}
		return nil
	})
	sessions, err := nd.melody.Sessions()
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range sessions {
		sb.conns = append(sb.conns, connOf(s))
	}
	return sb
}

// read counts the messages of one client, newline-delimited in text
// frames, until the connection ends.
func (sb *sendBench) read(rc *rawClient) {
	for {
		op, data, err := rc.next()
		if err != nil || op == websocket.CloseMessage {
			return
		}
		if op != websocket.TextMessage {
			continue
		}
		if sb.got.Add(int64(bytes.Count(data, []byte{'\n'})+1)) >= sb.want.Load() {
			select {
			case sb.sig <- struct{}{}:
			default:
			}
		}
	}
}

// await waits until the clients have received total messages in all.
func (sb *sendBench) await(b *testing.B, total int64) {
	sb.want.Store(total)
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for sb.got.Load() < total {
		select {
		case <-sb.sig:
		case <-deadline.C:
			b.Fatalf("clients received %d of %d messages", sb.got.Load(), total)
		}
	}
}

// cpu reports, when the function it returns is called, the CPU time the
// process spent per op since: the wall time of ns/op counts what other
// processes on the machine take too.
func (sb *sendBench) cpu(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchFrame is a push of 128 bytes, as the load tool sends.
var benchFrame = []byte(`{"op":"push","service":"/push/bench","id":"0123456789abcdef","values":{"pad":"` + strings.Repeat("x", 128-81) + `"}}`)

// BenchmarkSendIdle is one delivery to an idle session, fan-out style: a
// frame to each of 1000 sessions in turn, then a wait until every client
// has it (timed too, so that work left to another goroutine counts).
func BenchmarkSendIdle(b *testing.B) {
	const n = 1000
	sb := newSendBench(b, n)
	var sent int64
	b.ReportAllocs()
	defer sb.cpu(b)()
	for b.Loop() {
		if err := sb.conns[sent%n].Send(benchFrame); err != nil {
			b.Fatal(err)
		}
		sent++
		if sent%n == 0 {
			sb.await(b, sent)
		}
	}
	sb.await(b, sent)
}

// BenchmarkSendBusy is one delivery to a busy session: bursts of 64 frames
// to each of 100 sessions in turn, which coalesce behind the first.
func BenchmarkSendBusy(b *testing.B) {
	const n, burst = 100, 64
	sb := newSendBench(b, n)
	var sent int64
	b.ReportAllocs()
	defer sb.cpu(b)()
	for b.Loop() {
		if err := sb.conns[(sent/burst)%n].Send(benchFrame); err != nil {
			b.Fatal(err)
		}
		sent++
		if sent%(n*burst) == 0 {
			sb.await(b, sent)
		}
	}
	sb.await(b, sent)
}
