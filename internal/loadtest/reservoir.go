package loadtest

import (
	"sort"
	"sync"
	"time"
)

// Reservoir keeps a bounded uniform sample of durations for quantiles,
// however many are added. It is sharded so thousands of reader goroutines
// rarely contend: each shard runs reservoir sampling (Algorithm R) on its
// own, and Quantiles weighs each shard's samples by how many values the
// shard saw, so the merged sample stays unbiased when shards see unequal
// counts.
type Reservoir struct {
	shards []resShard
}

type resShard struct {
	mu   sync.Mutex
	seen int64
	buf  []int64
	rng  uint64
	_    [24]byte // keep neighbouring shards' locks off one cache line
}

// NewReservoir keeps up to capacity samples in total across shards shards.
func NewReservoir(capacity, shards int) *Reservoir {
	shards = max(shards, 1)
	per := max(capacity/shards, 1)
	r := &Reservoir{shards: make([]resShard, shards)}
	for i := range r.shards {
		r.shards[i].buf = make([]int64, 0, per)
		r.shards[i].rng = uint64(i)*0x9e3779b97f4a7c15 + 1
	}
	return r
}

// Add records d in shard key (any int; it is reduced modulo the shards).
func (r *Reservoir) Add(key int, d time.Duration) {
	s := &r.shards[uint(key)%uint(len(r.shards))]
	s.mu.Lock()
	s.seen++
	if len(s.buf) < cap(s.buf) {
		s.buf = append(s.buf, int64(d))
	} else {
		// xorshift64: cheap, and good enough to pick a slot.
		s.rng ^= s.rng << 13
		s.rng ^= s.rng >> 7
		s.rng ^= s.rng << 17
		if j := s.rng % uint64(s.seen); j < uint64(len(s.buf)) {
			s.buf[j] = int64(d)
		}
	}
	s.mu.Unlock()
}

// Reset forgets every sample.
func (r *Reservoir) Reset() {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		s.seen = 0
		s.buf = s.buf[:0]
		s.mu.Unlock()
	}
}

// Quantiles returns the q-quantiles (0 <= q <= 1) of the values added
// since the last Reset, and how many values were added. With none, the
// quantiles are zero.
func (r *Reservoir) Quantiles(qs ...float64) ([]time.Duration, int64) {
	type ws struct {
		v int64
		w float64
	}
	var all []ws
	var seen int64
	var total float64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		if len(s.buf) > 0 {
			w := float64(s.seen) / float64(len(s.buf))
			for _, v := range s.buf {
				all = append(all, ws{v, w})
			}
			total += float64(s.seen)
		}
		seen += s.seen
		s.mu.Unlock()
	}
	out := make([]time.Duration, len(qs))
	if len(all) == 0 {
		return out, 0
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v < all[j].v })
	for k, q := range qs {
		target := q * total
		acc := 0.0
		out[k] = time.Duration(all[len(all)-1].v)
		for _, x := range all {
			acc += x.w
			if acc >= target {
				out[k] = time.Duration(x.v)
				break
			}
		}
	}
	return out, seen
}
