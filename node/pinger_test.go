package node

import (
	"testing"
	"time"
)

// The pinger's wheel: sessions spread evenly over the buckets whenever
// they connect, and a session that ends leaves its bucket, whatever its
// place in it.
func TestPingerWheel(t *testing.T) {
	p := newPinger(10 * time.Second)
	if len(p.buckets) != maxPingWheel || p.tick != 10*time.Second/maxPingWheel {
		t.Fatalf("%d buckets of %v", len(p.buckets), p.tick)
	}
	p.started = true // no goroutine: the wheel alone is under test
	conns := make([]*wsConn, 1000)
	for i := range conns {
		conns[i] = &wsConn{pingBucket: -1}
		p.add(conns[i])
	}
	check := func(want int) {
		t.Helper()
		total := 0
		for b, bucket := range p.buckets {
			for i, c := range bucket {
				if int(c.pingBucket) != b || int(c.pingIndex) != i {
					t.Fatalf("session at %d/%d says %d/%d", b, i, c.pingBucket, c.pingIndex)
				}
			}
			total += len(bucket)
		}
		if total != want {
			t.Fatalf("%d sessions on the wheel, want %d", total, want)
		}
	}
	for b, bucket := range p.buckets {
		if n := len(bucket); n < 1000/maxPingWheel || n > 1000/maxPingWheel+1 {
			t.Fatalf("bucket %d holds %d sessions", b, n)
		}
	}
	check(1000)
	for i := 0; i < len(conns); i += 3 {
		p.remove(conns[i])
		p.remove(conns[i]) // once more: nothing
	}
	check(1000 - (1000+2)/3)
	if short := newPinger(time.Millisecond); len(short.buckets) != 1 || short.tick != time.Millisecond {
		t.Fatalf("1ms interval: %d buckets of %v", len(short.buckets), short.tick)
	}
	close(p.done) // as the goroutine would, for stop
	p.stop()
	late := &wsConn{pingBucket: -1}
	p.add(late)
	if late.pingBucket != -1 {
		t.Fatal("a session joined a stopped pinger")
	}
}
