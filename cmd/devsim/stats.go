package main

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// maxSamples bounds the latencies kept for quantiles; beyond it the
// recorder keeps a uniform sample (reservoir sampling), while count and
// max stay exact.
const maxSamples = 200_000

// latencies records durations for p50, p99 and max.
type latencies struct {
	mu      sync.Mutex
	samples []time.Duration
	count   int64
	max     time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	l.max = max(l.max, d)
	if len(l.samples) < maxSamples {
		l.samples = append(l.samples, d)
		return
	}
	if j := rand.Int64N(l.count); j < maxSamples {
		l.samples[j] = d
	}
}

// Latency is the summary of a set of durations, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// summary returns the quantiles (nearest rank) and the max.
func (l *latencies) summary() Latency {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	mx := l.max
	l.mu.Unlock()
	if len(s) == 0 {
		return Latency{}
	}
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(p*float64(len(s))+0.999999) - 1
		return ms(s[min(max(i, 0), len(s)-1)])
	}
	return Latency{P50: q(0.50), P99: q(0.99), Max: ms(mx)}
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// codes counts errors by code.
type codes struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *codes) add(code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]int64)
	}
	c.m[code]++
}

func (c *codes) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
