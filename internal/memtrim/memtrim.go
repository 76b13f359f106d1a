// Package memtrim gives memory back to the operating system once the
// process has gone quiet after a burst of work.
//
// Go's collector lets the heap grow to twice what is live before it
// collects (GOGC=100), and its scavenger keeps what the heap grew to, so
// a node that took a connect storm holds, for as long as it is idle, about
// twice the memory its sessions need: the garbage of the storm, collected
// but resident. A node idles most of its life with its sessions open, and
// that is when its memory per connection counts. So a trimmer looks at the
// runtime twice a second and, when the process allocates little (it is not
// in a burst) and holds much more than it has live, collects and returns
// the free pages at once (debug.FreeOSMemory). A trim costs two
// collections (about 0.2 CPU-seconds at 10,000 sessions); it is not made
// in a burst, where it would only add collections, nor more often than
// MinGap, and once made it is not made again until the garbage of quiet
// work (pings, presence refreshes) is again a quarter of the live heap:
// every minute or two on an idle node of 10,000 devices.
package memtrim

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is a trimmer's. The zero value takes the defaults.
type Config struct {
	// Every is how often the runtime is looked at (500 ms).
	Every time.Duration
	// QuietLooks is how many looks in a row must find the process quiet
	// before a trim (2): a burst has ended, not paused.
	QuietLooks int
	// MinExcess is the least memory held above the live heap that is
	// worth a trim (32 MiB); under it a collection costs more than it
	// gives back. A trim also waits for the excess to reach a quarter of
	// the live heap.
	MinExcess uint64
	// MinGap is the least time between two trims (30 s).
	MinGap time.Duration
	// Registerer, when set, gets fleethub_memory_trims_total and
	// fleethub_memory_trimmed_bytes_total.
	Registerer prometheus.Registerer
	Logger     *slog.Logger

	// For tests: what a look reads, and the trim.
	read func() Sample
	trim func()
}

// Sample is what one look reads from the runtime, in bytes.
type Sample struct {
	Allocated uint64 // allocated since the process started
	Live      uint64 // live heap as of the last collection
	Held      uint64 // heap memory held that a collection can give back or leaves live: objects, and free spans not returned
}

// Excess is what s holds above its live heap.
func (s Sample) Excess() uint64 {
	if s.Held <= s.Live {
		return 0
	}
	return s.Held - s.Live
}

// quietRate is the allocation rate, as a share of the live heap per
// second, under which the process counts as quiet: 1/64 of the live heap
// a second (an idle node of 10,000 devices, refreshing presence and
// answering pings, allocates about 1/200).
const quietRate = 64

func (c *Config) defaults() {
	if c.Every <= 0 {
		c.Every = 500 * time.Millisecond
	}
	if c.QuietLooks <= 0 {
		c.QuietLooks = 2
	}
	if c.MinExcess == 0 {
		c.MinExcess = 32 << 20
	}
	if c.MinGap <= 0 {
		c.MinGap = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.read == nil {
		c.read = readRuntime
	}
	if c.trim == nil {
		c.trim = trim
	}
}

// Run trims until ctx ends.
func Run(ctx context.Context, cfg Config) {
	cfg.defaults()
	trims := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "fleethub", Name: "memory_trims_total",
		Help: "Times the process, quiet after a burst, collected and returned its free memory to the operating system.",
	})
	trimmed := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "fleethub", Name: "memory_trimmed_bytes_total",
		Help: "Heap memory held above the live heap when a trim was made (what it could give back).",
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(trims, trimmed)
	}
	t := trimmer{cfg: cfg, last: cfg.read(), lastAt: time.Now()}
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if s, ok := t.look(now); ok {
				cfg.trim()
				trims.Inc()
				trimmed.Add(float64(s.Excess()))
				after := cfg.read()
				cfg.Logger.Debug("memory returned after a burst", "held_before", s.Held, "held_after", after.Held, "live", after.Live)
				t.last, t.lastAt = after, time.Now()
			}
		}
	}
}

// trimmer decides, look after look, when to trim.
type trimmer struct {
	cfg     Config
	last    Sample
	lastAt  time.Time
	quiet   int
	trimmed time.Time // the last trim; zero before the first
}

// look reads the runtime at now and reports whether to trim (and what it
// read).
func (t *trimmer) look(now time.Time) (Sample, bool) {
	s := t.cfg.read()
	elapsed := now.Sub(t.lastAt).Seconds()
	allocated := s.Allocated - t.last.Allocated
	t.last, t.lastAt = s, now
	if elapsed <= 0 || float64(allocated)/elapsed > float64(s.Live)/quietRate {
		t.quiet = 0
		return s, false
	}
	t.quiet++
	if t.quiet < t.cfg.QuietLooks || (!t.trimmed.IsZero() && now.Sub(t.trimmed) < t.cfg.MinGap) {
		return s, false
	}
	excess := s.Excess()
	if excess < t.cfg.MinExcess || excess < s.Live/4 {
		return s, false
	}
	t.quiet, t.trimmed = 0, now
	return s, true
}

var runtimeNames = []string{
	"/gc/heap/allocs:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
}

func readRuntime() Sample {
	ms := make([]metrics.Sample, len(runtimeNames))
	for i, n := range runtimeNames {
		ms[i].Name = n
	}
	metrics.Read(ms)
	v := func(i int) uint64 {
		if ms[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return ms[i].Value.Uint64()
	}
	return Sample{Allocated: v(0), Live: v(1), Held: v(2) + v(3)}
}

// trim collects twice, the second time returning the free memory: what
// the first leaves in sync.Pools' victim caches (buffers of NATS and of
// the HTTP server, of a burst's size) goes with the second.
func trim() {
	runtime.GC()
	debug.FreeOSMemory()
}
