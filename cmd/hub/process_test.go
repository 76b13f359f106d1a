package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/loadtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// Presence timings for the process tests.
const (
	pGrace   = 700 * time.Millisecond
	pNodeTTL = time.Second
)

// startNodes builds cmd/hub and runs n nodes as processes on one NATS
// server, so that one can be killed with SIGKILL.
func startNodes(t *testing.T, ns string, n int) []*loadtest.Hub {
	t.Helper()
	bin, err := loadtest.BuildHub(t.TempDir())
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	var hubs []*loadtest.Hub
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		h, err := loadtest.StartHub(ctx, bin, "--nats-url", ns, "--node-id", fmt.Sprintf("proc-%d", i),
			"--master-secret", string(hubtest.MasterSecret),
			"--offline-grace", pGrace.String(), "--node-ttl", pNodeTTL.String(), "--presence-ttl", "5s")
		cancel()
		if err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = h.Stop() })
		hubs = append(hubs, h)
	}
	return hubs
}

type records struct {
	mu sync.Mutex
	by map[string][]hub.PresenceRecord
	at map[string][]time.Time
}

func watchRecords(t *testing.T, nc *nats.Conn) *records {
	t.Helper()
	r := &records{by: map[string][]hub.PresenceRecord{}, at: map[string][]time.Time{}}
	if _, err := nc.Subscribe("hub.presence.*", func(m *nats.Msg) {
		var rec hub.PresenceRecord
		_ = json.Unmarshal(m.Data, &rec)
		r.mu.Lock()
		r.by[rec.SN] = append(r.by[rec.SN], rec)
		r.at[rec.SN] = append(r.at[rec.SN], time.Now())
		r.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	return r
}

func (r *records) get(sn string) ([]hub.PresenceRecord, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hub.PresenceRecord(nil), r.by[sn]...), append([]time.Time(nil), r.at[sn]...)
}

func (r *records) waitN(t *testing.T, sn string, n int, timeout time.Duration) {
	t.Helper()
	natstest.Eventually(t, timeout, func() error {
		if got, _ := r.get(sn); len(got) < n {
			return fmt.Errorf("%s: %d records, want %d", sn, len(got), n)
		}
		return nil
	})
}

// TestProcessKilled: SIGKILL one of three node processes. Its devices are
// reported offline with node_lost, once each across the two survivors,
// within node TTL + grace + 2 s.
func TestProcessKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs node processes; skipped with -short")
	}
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	rec := watchRecords(t, nc)
	hubs := startNodes(t, ns.ClientURL(), 3)
	victim := hubs[1]
	const n = 20
	for i := range n { // the clients stay open until the test ends
		c := hubtest.Dial(t, victim.WSURL, nil)
		c.MustOK("/auth/device", hubtest.DeviceArgs(fmt.Sprintf("K-%d", i), "retail"))
	}
	for i := range n {
		rec.waitN(t, fmt.Sprintf("K-%d", i), 1, 10*time.Second)
	}
	killedAt := time.Now()
	victim.Kill()
	var worst time.Duration
	for i := range n {
		sn := fmt.Sprintf("K-%d", i)
		rec.waitN(t, sn, 2, pNodeTTL+pGrace+5*time.Second)
		got, at := rec.get(sn)
		if got[1].Online || got[1].Reason != "node_lost" || got[1].Node != "proc-1" {
			t.Fatalf("%s: %+v", sn, got[1])
		}
		worst = max(worst, at[1].Sub(killedAt))
	}
	t.Logf("node_lost reported at most %v after SIGKILL (node TTL %v, grace %v)", worst, pNodeTTL, pGrace)
	if worst > pNodeTTL+pGrace+2*time.Second {
		t.Fatalf("node_lost after %v", worst)
	}
	// Once each, however many nodes watched.
	time.Sleep(500 * time.Millisecond)
	for i := range n {
		if got, _ := rec.get(fmt.Sprintf("K-%d", i)); len(got) != 2 {
			t.Fatalf("K-%d: %d records: %+v", i, len(got), got)
		}
	}
}

// TestProcessTerminated: SIGTERM closes sessions with 1012 and exits; a
// device that reconnects to another node within the grace causes no
// record, one that does not is reported offline by a survivor.
func TestProcessTerminated(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs node processes; skipped with -short")
	}
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	rec := watchRecords(t, nc)
	hubs := startNodes(t, ns.ClientURL(), 2)
	stay := hubtest.Dial(t, hubs[0].WSURL, nil)
	stay.MustOK("/auth/device", hubtest.DeviceArgs("T-back", "retail"))
	gone := hubtest.Dial(t, hubs[0].WSURL, nil)
	gone.MustOK("/auth/device", hubtest.DeviceArgs("T-gone", "retail"))
	rec.waitN(t, "T-back", 1, 10*time.Second)
	rec.waitN(t, "T-gone", 1, 10*time.Second)

	if err := hubs[0].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := stay.Closed(10 * time.Second); code != 1012 {
		t.Fatalf("closed with %d, want 1012", code)
	}
	back := hubtest.Dial(t, hubs[1].WSURL, nil)
	back.MustOK("/auth/device", hubtest.DeviceArgs("T-back", "retail"))
	if !hubs[0].Wait(10 * time.Second) {
		t.Fatal("node did not exit within 10 s of SIGTERM")
	}
	rec.waitN(t, "T-gone", 2, pGrace+5*time.Second)
	if got, _ := rec.get("T-gone"); got[1].Online || got[1].Reason != "node_lost" {
		t.Fatalf("T-gone: %+v", got)
	}
	time.Sleep(pGrace + 500*time.Millisecond)
	if got, _ := rec.get("T-back"); len(got) != 1 {
		t.Fatalf("T-back came back within grace but got records %+v", got)
	}
}
