package hub

import (
	"testing"

	"golang.org/x/time/rate"
)

func TestSetLimitStartsFull(t *testing.T) {
	var l rate.Limiter
	setLimit(&l, 1, 5)
	for i := range 5 {
		if !l.Allow() {
			t.Fatalf("event %d refused: the bucket did not start full", i)
		}
	}
	if l.Allow() {
		t.Fatal("sixth event allowed at once")
	}
}
