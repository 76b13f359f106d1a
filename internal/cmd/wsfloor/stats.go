package main

// The measuring parts below follow ../shared/bench (internal/metrics and
// internal/target), a separate module, so that the floor's figures are
// taken the way wsload takes the servers': the same histogram, the same
// /proc readers, the same payload parse.

import (
	"bytes"
	"fmt"
	"math/bits"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/fleethub/fleethub/internal/loadtest"
)

// histogram is a log-linear histogram of nanosecond values with ~1.6%
// relative resolution; record is lock-free.
type histogram struct {
	counts [subCount + 58*halfCount]atomic.Uint64
	max    atomic.Int64
	n      atomic.Uint64
}

const (
	subBits   = 7
	subCount  = 1 << subBits
	halfCount = subCount / 2
)

func histIndex(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits
	m := int(v>>uint(e)) - halfCount
	return subCount + (e-1)*halfCount + m
}

func histLowerBound(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	e := (i-subCount)/halfCount + 1
	m := (i - subCount) % halfCount
	return uint64(m+halfCount) << uint(e)
}

func (h *histogram) record(ns int64) {
	ns = max(ns, 0)
	i := min(histIndex(uint64(ns)), len(h.counts)-1)
	h.counts[i].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// quantile is the value at q (0..1) in ns, the bucket's midpoint.
func (h *histogram) quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	target := max(uint64(q*float64(n)+0.5), 1)
	var acc uint64
	for i := range h.counts {
		acc += h.counts[i].Load()
		if acc >= target {
			v := int64((histLowerBound(i) + histLowerBound(i+1)) / 2)
			return min(v, h.max.Load())
		}
	}
	return h.max.Load()
}

func (h *histogram) latency() *Latency {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return &Latency{P50: ms(h.quantile(0.50)), P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)), Max: ms(h.max.Load())}
}

// selfCPU is this process's user+system CPU seconds (getrusage).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// sysCPU is whole-machine CPU time from /proc/stat, in seconds.
type sysCPU struct {
	Task  float64 // user+nice+system
	IRQ   float64 // irq+softirq, charged to no process
	Steal float64
	Total float64
}

func systemCPU() sysCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return sysCPU{}
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	clkTck := float64(loadtest.ClockTicks())
	v := make([]float64, 8)
	for i := 0; i < 8 && i+1 < len(f); i++ {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
		v[i] /= clkTck
	}
	return sysCPU{Task: v[0] + v[1] + v[2], IRQ: v[5] + v[6], Steal: v[7],
		Total: v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]}
}

// raiseNofile raises RLIMIT_NOFILE as far as it may go and returns the
// soft limit; the client process inherits it.
func raiseNofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Max < 1<<20 {
		try := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return try.Cur
		}
	}
	rl.Cur = rl.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}

// parseIPRange parses a loopback range such as 127.0.0.2-127.0.0.50.
func parseIPRange(s string) ([]net.IP, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, hi := net.ParseIP(a).To4(), net.ParseIP(b).To4()
	if lo == nil || hi == nil || lo[0] != 127 || hi[0] != 127 || lo[1] != hi[1] || lo[2] != hi[2] || lo[3] > hi[3] {
		return nil, fmt.Errorf("-src-ips %q: want a range like 127.0.0.2-127.0.0.50 inside 127.0.0.0/8", s)
	}
	var ips []net.IP
	for x := int(lo[3]); x <= int(hi[3]); x++ {
		ips = append(ips, net.IPv4(127, lo[1], lo[2], byte(x)))
	}
	return ips, nil
}

var (
	keyT = []byte(`"t":`)
	keyS = []byte(`"s":`)
)

// parseTS finds "t":<int> and "s":<int> in a message, by byte search as
// the bench's clients do; ok is false when either is missing.
func parseTS(b []byte) (ts, seq int64, ok bool) {
	i := bytes.Index(b, keyT)
	if i < 0 {
		return 0, 0, false
	}
	if ts, ok = parseUint(b[i+len(keyT):]); !ok {
		return 0, 0, false
	}
	j := bytes.Index(b, keyS)
	if j < 0 {
		return 0, 0, false
	}
	seq, ok = parseUint(b[j+len(keyS):])
	return ts, seq, ok
}

func parseUint(b []byte) (int64, bool) {
	var v int64
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
		n++
	}
	return v, n > 0
}
