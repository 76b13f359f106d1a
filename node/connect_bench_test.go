package node_test

import (
	"encoding/json"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
)

// BenchmarkDeviceConnect measures one device connect as a device makes
// it: a WebSocket upgrade over loopback, /auth/device (signature, nonce
// claim in JetStream, subscriptions, presence entry, index key and
// connected record, all in a real embedded JetStream reached in-process,
// as the hub binary does), and the answer; then the client closes. Each
// connect is a new device, so every one creates an entry and stores a
// record. ns/op and allocs/op are per connect, client side included (the
// same in every run). serial is one connect at a time (latency: the round
// trips of one auth); parallel runs 32 at once (CPU per connect when
// connects overlap, as in a connect storm).
func BenchmarkDeviceConnect(b *testing.B) {
	ns := natstest.Run(b)
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	// No grace ends and no refresh falls during the run: what is
	// measured is the connect.
	n := hubtest.StartNodeOn(b, nc, "bench", func(h *hubConfig, _ *nodeConfig) {
		h.OfflineGrace = time.Hour
		h.PresenceTTL = time.Hour
	})
	url := n.WSURL()
	var seq atomic.Int64
	connect := func(b *testing.B) {
		i := seq.Add(1)
		sn := "BENCH-" + strconv.FormatInt(i, 10)
		ts := time.Now().Unix()
		nonce := "bench-" + strconv.FormatInt(i, 36) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		frame, _ := json.Marshal(map[string]any{
			"op": "request", "service": "/auth/device", "request_id": "1",
			"args": map[string]any{"sn": sn, "ts": ts, "nonce": nonce, "type": "bench",
				"sig": auth.Sign(auth.DeviceKey(hubtest.MasterSecret, sn), sn, ts, nonce)},
		})
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, frame); err != nil {
			b.Error(err)
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := c.ReadMessage()
		if err != nil {
			b.Error(err)
			return
		}
		var m struct {
			Code int  `json:"code"`
			OK   bool `json:"result"`
		}
		if err := json.Unmarshal(data, &m); err != nil || m.Code != 0 || !m.OK {
			b.Errorf("auth of %s: %s", sn, data)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			connect(b)
		}
		reportCPU(b, cpu)
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16) // 32 on two cores
		cpu := processCPU()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				connect(b)
			}
		})
		reportCPU(b, cpu)
	})
}

// processCPU is the CPU time the process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per op since from, as
// cpu-us/op: on a shared machine, a steadier figure than ns/op (client
// side included, the same in every run).
func reportCPU(b *testing.B, from time.Duration) {
	b.ReportMetric(float64((processCPU()-from).Microseconds())/float64(b.N), "cpu-us/op")
}
