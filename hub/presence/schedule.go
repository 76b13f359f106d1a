package presence

import "time"

// RefreshAfter is how long after its last write an entry is refreshed:
// the TTL less a margin for a late sweep or a slow write (a tenth of the
// TTL, at least a third of it or 3 s for short test TTLs). At the default
// 2m TTL an entry is written every 108 s.
func RefreshAfter(ttl time.Duration) time.Duration {
	return ttl - max(ttl/10, min(ttl/3, 3*time.Second))
}

// Due is an item's next refresh, at a time in Unix nanoseconds.
type Due[T any] struct {
	At   int64
	Item T
}

// Queue is a min-heap of refreshes by time, so that a sweep costs what it
// writes, not what the node holds. Items that no longer need a refresh
// (ended, replaced, queued again) stay until they come up, and are skipped
// by the caller then. The zero Queue is empty and ready.
type Queue[T any] struct {
	h []Due[T]
}

// Len is the number of items queued.
func (q *Queue[T]) Len() int { return len(q.h) }

// Peek returns the earliest item. The queue must not be empty.
func (q *Queue[T]) Peek() Due[T] { return q.h[0] }

// Push queues it.
func (q *Queue[T]) Push(it Due[T]) {
	q.h = append(q.h, it)
	h := q.h
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if h[parent].At <= h[i].At {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

// Pop removes and returns the earliest item. The queue must not be empty.
func (q *Queue[T]) Pop() Due[T] {
	h := q.h
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = Due[T]{}
	q.h = h[:n]
	q.down(0)
	return top
}

func (q *Queue[T]) down(i int) {
	h := q.h
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		least := l
		if r := l + 1; r < len(h) && h[r].At < h[l].At {
			least = r
		}
		if h[i].At <= h[least].At {
			return
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
}
