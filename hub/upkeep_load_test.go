//go:build load

package hub

import (
	"context"
	"fmt"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (srv *Server) metricsValue() float64 { return testutil.ToFloat64(srv.metrics.presenceWrites) }

// TestPresenceUpkeepSteady runs the real upkeep loop for a while with a
// presence TTL scaled so that the node writes as many entries a second as
// 100,000 devices need at the default 2m TTL (one write per device every
// 108 s): the CPU it shows is that of 100,000 devices. CPU covers the hub
// and the embedded NATS server (one process, in-process connection).
//
//	UPKEEP_DEVICES=100000 go test -tags load -run TestPresenceUpkeepSteady -v -timeout 20m ./hub
//	UPKEEP_DEVICES=50000 UPKEEP_TTL=2m go test ...   (50,000 at the default TTL)
func TestPresenceUpkeepSteady(t *testing.T) {
	n := 50000
	if testing.Short() {
		n = 10000
	}
	if v, err := strconv.Atoi(os.Getenv("UPKEEP_DEVICES")); err == nil && v > 0 {
		n = v // 100000 runs at the default TTL itself
	}
	every := pres.RefreshAfter(2 * time.Minute)
	rate := 100000 / every.Seconds()
	ttl := time.Duration(float64(n)/rate/0.9*float64(time.Second)) + time.Second
	if v, err := time.ParseDuration(os.Getenv("UPKEEP_TTL")); err == nil && v > 0 {
		ttl = v // UPKEEP_TTL=2m: N devices at the default TTL
	}
	srv := inProcessServer(t, ttl)
	ctx := context.Background()
	for i := range n {
		s, _ := attach(t, srv, 16, device(fmt.Sprintf("S%d", i), "dog", "g1"))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := srv.presence.connected(cctx, s); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	connected := time.Now()
	// Refreshes are spread over the interval from the start; once every
	// entry has been written again the rate is steady: measure a window.
	natstest.Eventually(t, 3*ttl, func() error {
		if srv.metricsValue() < float64(n) {
			return fmt.Errorf("%.0f refreshes", srv.metricsValue())
		}
		return nil
	})
	// The connected records' ids are kept for HUB_PRESENCE's duplicate
	// window, and the server's expiring them is the connects' cost, not
	// the upkeep's: the window opens once they are gone.
	time.Sleep(time.Until(connected.Add(2*time.Minute + 5*time.Second)))
	window := 60 * time.Second
	if testing.Short() {
		window = 20 * time.Second
	}
	path := os.Getenv("UPKEEP_PROFILE")
	if path != "" {
		// A CPU profile of the window, and allocations before and after it
		// (compare with go tool pprof -diff_base).
		writeAllocs(t, path+".allocs0")
		f, _ := os.Create(path + ".steady")
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	m0 := readGCMetrics()
	w0, cpu0, t0 := srv.metricsValue(), cpuNow(), time.Now()
	time.Sleep(window)
	writes, cpu, wall := srv.metricsValue()-w0, cpuNow()-cpu0, time.Since(t0)
	m1 := readGCMetrics()
	if path != "" {
		writeAllocs(t, path+".allocs1")
	}
	// A window holds a collection of this large heap or none, which moves
	// the figure by a third: the garbage collector's share is amortised
	// instead. A collection is triggered by allocating as much again as
	// the live heap (GOGC=100) and costs about the same whoever triggers
	// it: one is made and timed here, and the window is charged for the
	// fraction of it that its allocations account for.
	g0 := readGCMetrics()
	runtime.GC()
	g1 := readGCMetrics()
	cycleCPU := g1.gcCPU - g0.gcCPU
	allocated := float64(m1.allocs - m0.allocs)
	gcShare := cycleCPU * allocated / float64(g1.goal-g1.live)
	nonGC := cpu.Seconds() - (m1.gcCPU - m0.gcCPU)
	wps := writes / wall.Seconds()
	perWrite := (nonGC + gcShare) / writes
	t.Logf("%d devices, presence TTL %v: %.0f writes/s (100,000 devices at the default TTL: %.0f/s) over %v",
		n, ttl.Round(time.Second), wps, rate, wall.Round(time.Second))
	t.Logf("CPU in the window %.2f%% of one core, with %d collections; without them %.2f%%; %.0f bytes allocated per write, a collection of the %d MiB live heap costs %.2f CPU-s, amortised %.2f%%",
		cpu.Seconds()/wall.Seconds()*100, m1.cycles-m0.cycles, nonGC/wall.Seconds()*100, allocated/writes, g1.live>>20, cycleCPU, gcShare/wall.Seconds()*100)
	t.Logf("upkeep: %.2f%% of one core, %v per write (fixed costs included: the node's liveness entry, the watchers' heartbeats)",
		(nonGC+gcShare)/wall.Seconds()*100, time.Duration(perWrite*1e9).Round(100*time.Nanosecond))
}

type gcMetrics struct {
	allocs, cycles, live, goal uint64
	gcCPU                      float64
}

func readGCMetrics() gcMetrics {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}}
	rtmetrics.Read(s)
	return gcMetrics{allocs: s[0].Value.Uint64(), cycles: s[1].Value.Uint64(), gcCPU: s[2].Value.Float64(), live: s[3].Value.Uint64(), goal: s[4].Value.Uint64()}
}

// writeAllocs writes the allocation profile as of a collection made now.
func writeAllocs(t *testing.T, path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// inProcessServer starts a hub on an in-process connection, as a node that
// embeds its NATS server has, with presenceTTL (0: the default).
func inProcessServer(t *testing.T, presenceTTL time.Duration) *Server {
	t.Helper()
	ns := natstest.Run(t)
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return startTestServer(t, nc, Config{PresenceTTL: presenceTTL})
}
