package client

import (
	"math"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	lo, hi := 250*time.Millisecond, 30*time.Second
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{0, 250 * time.Millisecond},
		{1, 500 * time.Millisecond},
		{2, time.Second},
		{6, 16 * time.Second},
		{7, 30 * time.Second}, // 32s capped
		{100, 30 * time.Second},
		{math.MaxInt, 30 * time.Second},
	}
	for _, tc := range tests {
		var gotN int64
		lowest := func(n int64) int64 { gotN = n; return 0 }
		highest := func(n int64) int64 { gotN = n; return n - 1 }
		if d := backoff(tc.attempt, lo, hi, lowest); d != 0 {
			t.Errorf("attempt %d: lowest draw %v, want 0", tc.attempt, d)
		}
		if gotN != int64(tc.ceiling)+1 {
			t.Errorf("attempt %d: drew from [0, %d), want [0, %d]", tc.attempt, gotN, tc.ceiling)
		}
		if d := backoff(tc.attempt, lo, hi, highest); d != tc.ceiling {
			t.Errorf("attempt %d: highest draw %v, want %v", tc.attempt, d, tc.ceiling)
		}
	}
}

func TestBackoffEdges(t *testing.T) {
	top := func(n int64) int64 { return n - 1 }
	if d := backoff(3, 0, time.Second, top); d != 0 {
		t.Errorf("zero minimum: %v", d)
	}
	if d := backoff(5, time.Second, time.Second, top); d != time.Second {
		t.Errorf("min = max: %v", d)
	}
	huge := time.Duration(math.MaxInt64)
	if d := backoff(70, huge/3, huge, top); d != huge-1 {
		t.Errorf("near overflow: %v", d)
	}
	// The real source stays in range.
	for range 1000 {
		if d := backoff(2, 10*time.Millisecond, time.Minute, jitter); d < 0 || d > 40*time.Millisecond {
			t.Fatalf("jitter out of range: %v", d)
		}
	}
}
