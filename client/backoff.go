package client

import (
	"math"
	"math/rand/v2"
	"time"
)

// backoff returns how long to wait before the attempt-th consecutive
// reconnection attempt (from 0): "full jitter", a random duration in
// [0, min(hi, lo*2^attempt)]. Spreading the whole range, not only a
// fraction of it, keeps a fleet that lost a node from coming back in one
// wave. randN returns a number in [0, n); tests inject their own.
func backoff(attempt int, lo, hi time.Duration, randN func(n int64) int64) time.Duration {
	ceiling := lo
	for i := 0; i < attempt && ceiling < hi; i++ {
		if ceiling > hi/2 {
			ceiling = hi // doubling would pass hi (or overflow)
			break
		}
		ceiling *= 2
	}
	ceiling = min(ceiling, hi)
	if ceiling <= 0 {
		return 0
	}
	n := int64(ceiling)
	if n < math.MaxInt64 {
		n++ // [0, ceiling], both ends included
	}
	return time.Duration(randN(n))
}

// jitter is the production source of backoff's randomness.
func jitter(n int64) int64 { return rand.Int64N(n) }
