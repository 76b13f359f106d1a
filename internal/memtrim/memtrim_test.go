package memtrim

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// looks feeds a trimmer samples one second apart and returns which looks
// trimmed.
func looks(t *testing.T, cfg Config, samples []Sample) []bool {
	t.Helper()
	i := 0
	cfg.read = func() Sample { s := samples[i]; i++; return s }
	cfg.defaults()
	start := time.Unix(1000, 0)
	tr := trimmer{cfg: cfg, last: cfg.read(), lastAt: start}
	var out []bool
	for n := 1; i < len(samples); n++ {
		_, ok := tr.look(start.Add(time.Duration(n) * time.Second))
		out = append(out, ok)
	}
	return out
}

const mib = 1 << 20

func TestTrimAfterBurstOnly(t *testing.T) {
	// A burst (100 MiB a second against 100 MiB live), then quiet looks
	// (1 MiB a second), with 100 MiB held above the live heap.
	var samples []Sample
	alloc := uint64(0)
	for i := 0; i < 4; i++ {
		alloc += 100 * mib
		samples = append(samples, Sample{Allocated: alloc, Live: 100 * mib, Held: 200 * mib})
	}
	for i := 0; i < 4; i++ {
		alloc += mib
		samples = append(samples, Sample{Allocated: alloc, Live: 100 * mib, Held: 200 * mib})
	}
	got := looks(t, Config{}, samples)
	want := []bool{false, false, false, false, true, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("look %d trimmed %v, want %v (all: %v)", i+1, got[i], want[i], got)
		}
	}
}

func TestNoTrimWithoutExcess(t *testing.T) {
	var samples []Sample
	for i := 0; i < 8; i++ {
		// Quiet, but what is held above the live heap is under a quarter
		// of it, then under MinExcess.
		held := uint64(120 * mib)
		live := uint64(100 * mib)
		if i >= 4 {
			held, live = 40*mib, 10*mib
		}
		samples = append(samples, Sample{Allocated: uint64(i) * 1024, Live: live, Held: held})
	}
	for i, ok := range looks(t, Config{}, samples) {
		if ok {
			t.Fatalf("look %d trimmed with little excess", i+1)
		}
	}
}

func TestMinGapBetweenTrims(t *testing.T) {
	var samples []Sample
	for i := 0; i < 40; i++ {
		samples = append(samples, Sample{Allocated: uint64(i) * 1024, Live: 100 * mib, Held: 300 * mib})
	}
	var at []int
	for i, ok := range looks(t, Config{MinGap: 10 * time.Second}, samples) {
		if ok {
			at = append(at, i+1)
		}
	}
	if len(at) < 3 {
		t.Fatalf("trims at looks %v: want one every 10 s at most, and some", at)
	}
	for i := 1; i < len(at); i++ {
		if at[i]-at[i-1] < 10 {
			t.Fatalf("trims at looks %v: two within MinGap", at)
		}
	}
}

// sink keeps the garbage of TestRunReturnsMemory reachable until dropped.
var sink [][]byte

// TestRunReturnsMemory runs a trimmer on the real runtime: once a burst
// of garbage is dropped and the process is quiet, the trimmer returns it,
// and the counters say so.
func TestRunReturnsMemory(t *testing.T) {
	for range 96 {
		sink = append(sink, make([]byte, mib))
	}
	sink = nil
	runtime.GC() // the burst is garbage, collected; its pages are held

	reg := prometheus.NewRegistry()
	var once sync.Once
	trimmed := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{
			Every: 20 * time.Millisecond, QuietLooks: 2, MinExcess: 16 * mib, Registerer: reg,
			trim: func() {
				debug.FreeOSMemory()
				once.Do(func() { close(trimmed) })
			},
		})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-trimmed:
	case <-time.After(30 * time.Second):
		t.Fatalf("no trim with %d MiB held above %d MiB live", readRuntime().Excess()/mib, readRuntime().Live/mib)
	}
	cancel()
	<-done
	if ex := readRuntime().Excess(); ex > 16*mib {
		t.Errorf("after the trim %d MiB are still held above the live heap", ex/mib)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var trims float64
	for _, mf := range mfs {
		if mf.GetName() == "fleethub_memory_trims_total" {
			trims = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if trims < 1 {
		t.Errorf("fleethub_memory_trims_total = %v after a trim", trims)
	}
}
