package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	clkTckOnce sync.Once
	clkTck     int64 = 100
)

// ClockTicks returns the kernel's clock ticks per second (USER_HZ), the
// unit of utime and stime in /proc/<pid>/stat. It asks `getconf CLK_TCK`
// once and assumes 100, the value on every common Linux build, if that
// fails.
func ClockTicks() int64 {
	clkTckOnce.Do(func() {
		out, err := exec.Command("getconf", "CLK_TCK").Output()
		if err != nil {
			return
		}
		if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
			clkTck = v
		}
	})
	return clkTck
}

// CPUTime returns the user plus system CPU time the process pid has used,
// from utime and stime in /proc/<pid>/stat (all its threads; waited-for
// children excluded). Its resolution is one clock tick, normally 10 ms.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// or parentheses itself, so the fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("loadtest: /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14 and stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("loadtest: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("loadtest: /proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / time.Duration(ClockTicks()), nil
}

// SystemBusy returns the CPU time all processes on the machine have used
// since boot, summed over CPUs (user, nice, system, irq, softirq and steal
// in the "cpu" line of /proc/stat). Differences over a span, less the
// hub's and the generator's own, show how much else competed for the CPUs.
func SystemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("loadtest: /proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadtest: /proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / time.Duration(ClockTicks()), nil
}

// RSS returns the resident set size of pid in KiB (VmRSS in
// /proc/<pid>/status).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("loadtest: /proc/%d/status: no VmRSS", pid)
}

// SettleOptions says when RSS counts as settled.
type SettleOptions struct {
	Interval  time.Duration // between samples; default 200 ms
	Window    time.Duration // span the samples must agree over; default 1 s
	Tolerance float64       // max (max-min)/max over the window; default 0.01
	Max       time.Duration // give up (not an error) after this; default 3 s
}

// Settled is the outcome of SettleRSS.
type Settled struct {
	RSSKiB  int64         // the last sample
	Stable  bool          // false when Max passed first
	Took    time.Duration // from the first to the last sample
	CPU     time.Duration // CPU the process used meanwhile
	Samples int
}

// SettleRSS samples the RSS of pid until the samples over the last Window
// lie within Tolerance of each other, or Max has passed (then Stable is
// false). It forces nothing in the process; it only waits. The CPU the
// process used meanwhile is returned too, a measure of its idle cost.
func SettleRSS(ctx context.Context, pid int, o SettleOptions) (Settled, error) {
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Window <= 0 {
		o.Window = time.Second
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 0.01
	}
	if o.Max <= 0 {
		o.Max = 3 * time.Second
	}
	type sample struct {
		at  time.Time
		rss int64
	}
	cpu0, err := CPUTime(pid)
	if err != nil {
		return Settled{}, err
	}
	start := time.Now()
	var hist []sample
	n := 0
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		rss, err := RSS(pid)
		if err != nil {
			return Settled{}, err
		}
		now := time.Now()
		hist = append(hist, sample{now, rss})
		n++
		// Keep the samples of the last Window (plus the one just before
		// it, so the window is fully covered).
		for len(hist) > 2 && now.Sub(hist[1].at) >= o.Window {
			hist = hist[1:]
		}
		lo, hi := rss, rss
		for _, s := range hist {
			lo, hi = min(lo, s.rss), max(hi, s.rss)
		}
		covered := now.Sub(hist[0].at) >= o.Window
		stable := covered && float64(hi-lo) <= o.Tolerance*float64(hi)
		if stable || now.Sub(start) >= o.Max {
			cpu1, err := CPUTime(pid)
			if err != nil {
				return Settled{}, err
			}
			return Settled{RSSKiB: rss, Stable: stable, Took: now.Sub(start), CPU: cpu1 - cpu0, Samples: n}, nil
		}
		select {
		case <-ctx.Done():
			return Settled{}, ctx.Err()
		case <-tick.C:
		}
	}
}
