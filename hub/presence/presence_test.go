package presence

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
)

func TestQueueOrder(t *testing.T) {
	var q Queue[int]
	for i := range 1000 {
		q.Push(Due[int]{At: rand.Int64N(500), Item: i})
	}
	last := int64(-1)
	for i := 0; q.Len() > 0; i++ {
		it := q.Pop()
		if it.At < last {
			t.Fatalf("item %d at %d after %d", i, it.At, last)
		}
		last = it.At
		if i%3 == 0 {
			q.Push(Due[int]{At: last + rand.Int64N(100)})
		}
	}
}

func TestRefreshAfter(t *testing.T) {
	for _, tc := range []struct{ ttl, want time.Duration }{
		{2 * time.Minute, 108 * time.Second},
		{4 * time.Second, 4*time.Second - 4*time.Second/3},
		{2 * time.Second, 2*time.Second - 2*time.Second/3},
	} {
		if got := RefreshAfter(tc.ttl); got != tc.want {
			t.Errorf("RefreshAfter(%v) = %v, want %v", tc.ttl, got, tc.want)
		}
	}
}

// A device's lock is held by one at a time; a waiter gives up when its
// context ends, and nothing is left behind.
func TestLocks(t *testing.T) {
	var l Locks
	ctx := context.Background()
	var mu sync.Mutex
	held, most := 0, 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := l.Lock(ctx, "D-1")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			held++
			most = max(most, held)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			held--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if most != 1 {
		t.Fatalf("%d holders at once", most)
	}
	unlock, _ := l.Lock(ctx, "D-1")
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Lock(short, "D-1"); err == nil {
		t.Fatal("a second holder while the lock is held")
	}
	unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) != 0 {
		t.Fatalf("%d locks left", len(l.m))
	}
}

func BenchmarkAppendEntry(b *testing.B) {
	e := schema.PresenceEntry{Node: "node-1", Session: "s-0123456789abcdef", Since: 1763798400000, LastSeen: 1763798500000, Addr: "10.1.2.3:45678", Type: "dog", Group: "g1"}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], &e)
	}
}
