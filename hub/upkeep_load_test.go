//go:build load

package hub

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPresenceUpkeep measures what keeping presence costs a node with many
// connected devices: the refresh writes and their CPU (this process holds
// the hub and the NATS server, so the figure covers both), then scales it
// to the default presence TTL. Sessions are in-process, with no sockets.
//
//	go test -tags load -run TestPresenceUpkeep -v -timeout 20m ./hub
func TestPresenceUpkeep(t *testing.T) {
	for _, n := range upkeepSizes() {
		t.Run(fmt.Sprintf("devices=%d", n), func(t *testing.T) {
			srv := inProcessServer(t, 0)
			ctx := context.Background()
			start := time.Now()
			for i := range n {
				s, _ := attach(t, srv, 16, device(fmt.Sprintf("U%d", i), "dog", "g1"))
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := srv.presence.connected(cctx, s); err != nil {
					t.Fatal(err)
				}
				cancel()
			}
			connect := time.Since(start)
			// Make every entry due, then sweep as upkeep does once a second
			// until all are refreshed.
			srv.presence.mu.Lock()
			for _, ld := range srv.presence.local {
				ld.refreshed = time.Time{}
			}
			srv.presence.mu.Unlock()
			before := srv.metricsValue()
			if path := os.Getenv("UPKEEP_PROFILE"); path != "" {
				f, _ := os.Create(fmt.Sprintf("%s.%d", path, n))
				_ = pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
			cpu0, wall0 := cpuNow(), time.Now()
			for sweeps := 0; srv.metricsValue()-before < float64(n) && sweeps < 100; sweeps++ {
				srv.presence.refresh(ctx)
			}
			cpu, wall := cpuNow()-cpu0, time.Since(wall0)
			writes := srv.metricsValue() - before
			perWrite := cpu / time.Duration(writes)
			// At the default TTL each entry is written every 80 s.
			rate := float64(n) / 80
			share := rate * perWrite.Seconds() * 100
			t.Logf("%d devices: connected in %v; refreshed %.0f entries in %v wall, %v CPU: %v CPU per write", n, connect.Round(time.Millisecond), writes, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), perWrite)
			t.Logf("at the default 2m presence TTL: %.0f KV writes/s, %.2f%% of one core (at 100,000 devices: %.0f writes/s, %.2f%%)", rate, share, 100000.0/80, 100000.0/80*perWrite.Seconds()*100)
		})
	}
}

func (srv *Server) metricsValue() float64 { return counterValue(srv.metrics.presenceWrites) }

func upkeepSizes() []int {
	if testing.Short() {
		return []int{10000}
	}
	return []int{10000, 50000}
}

// TestPresenceUpkeepSteady runs the real upkeep loop for a while with a
// presence TTL short enough that the node writes 1,250 entries a second:
// what 100,000 devices cost at the default 2m TTL (one write per device
// every 80 s). CPU covers the hub and the embedded NATS server.
func TestPresenceUpkeepSteady(t *testing.T) {
	n := 50000
	if testing.Short() {
		n = 10000
	}
	const rate = 1250.0
	ttl := time.Duration(float64(n) / rate * 1.5 * float64(time.Second)) // refresh after 2/3 of it
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
	// Wait for the first refreshes, then measure a window.
	natstest.Eventually(t, 2*ttl, func() error {
		if srv.metricsValue() < float64(n)/10 {
			return fmt.Errorf("%.0f refreshes", srv.metricsValue())
		}
		return nil
	})
	const window = 20 * time.Second
	if path := os.Getenv("UPKEEP_PROFILE"); path != "" {
		f, _ := os.Create(path + ".steady")
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	w0, cpu0, t0 := srv.metricsValue(), cpuNow(), time.Now()
	time.Sleep(window)
	writes, cpu, wall := srv.metricsValue()-w0, cpuNow()-cpu0, time.Since(t0)
	wps := writes / wall.Seconds()
	t.Logf("%d devices, presence TTL %v: %.0f writes/s over %v, CPU %.2f%% of one core, %v per write",
		n, ttl.Round(time.Second), wps, wall.Round(time.Second), cpu.Seconds()/wall.Seconds()*100, (cpu / time.Duration(writes)).Round(time.Microsecond))
	perWrite := cpu.Seconds() / writes
	for _, d := range []int{10000, 50000, 100000} {
		t.Logf("at the default 2m TTL, %d devices: %.0f writes/s, %.2f%% of one core", d, float64(d)/80, float64(d)/80*perWrite*100)
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
