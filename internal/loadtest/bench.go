package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// BenchService is the service of every push the harness sends.
const BenchService = "/push/bench"

// Pusher publishes timestamped pushes on the hub's NATS subjects, as a
// backend would.
type Pusher struct {
	nc  *nats.Conn
	pad string
}

// NewPusher connects to the hub's NATS server. Each push carries pad bytes
// of padding besides its send timestamp.
func NewPusher(natsURL string, pad int) (*Pusher, error) {
	nc, err := nats.Connect(natsURL, nats.Name("fleethub-loadtest"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("loadtest: connect to NATS %s: %w", natsURL, err)
	}
	return &Pusher{nc: nc, pad: strings.Repeat("x", pad)}, nil
}

// Publish sends {"service":"/push/bench","values":{"t":<now, unix
// nanos>,"pad":"xx..."}} on subject. The stamp is first in values so
// receivers find it cheaply.
func (p *Pusher) Publish(subject string) error {
	b := make([]byte, 0, 96+len(p.pad))
	b = append(b, `{"service":"`+BenchService+`","values":{"t":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `,"pad":"`...)
	b = append(b, p.pad...)
	b = append(b, `"}}`...)
	return p.nc.Publish(subject, b)
}

// Flush waits (at most 5 s) until the NATS server has everything published.
func (p *Pusher) Flush() error { return p.nc.FlushTimeout(5 * time.Second) }

// Close closes the NATS connection.
func (p *Pusher) Close() { p.nc.Close() }

// Result is the outcome of one delivery measurement.
type Result struct {
	Kind             string  `json:"kind"` // "broadcast" or "unicast"
	Sessions         int     `json:"sessions"`
	Pushes           int     `json:"pushes"`     // messages published
	Deliveries       int64   `json:"deliveries"` // messages received by devices
	WallSeconds      float64 `json:"wall_seconds"`
	HubCPUSeconds    float64 `json:"hub_cpu_seconds"`
	CPUSecPerMillion float64 `json:"cpu_seconds_per_million_deliveries"`
	DeliveriesPerSec float64 `json:"deliveries_per_second"`
	P50Ms            float64 `json:"latency_p50_ms"`
	P99Ms            float64 `json:"latency_p99_ms"`
	LatencyCount     int64   `json:"latency_count"`
	GenCPUSeconds    float64 `json:"generator_cpu_seconds"` // this process, for context
	// OtherCPUSeconds is the CPU every other process on the machine used
	// over the span: competition that inflates latency and wall time.
	OtherCPUSeconds float64 `json:"other_cpu_seconds"`
}

// meter measures the hub's and this process's CPU over a span.
type meter struct {
	pid              int
	start            time.Time
	hub0, gen0, sys0 time.Duration
}

func startMeter(pid int) (*meter, error) {
	hub0, err := CPUTime(pid)
	if err != nil {
		return nil, err
	}
	gen0, err := CPUTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	sys0, err := SystemBusy()
	if err != nil {
		return nil, err
	}
	return &meter{pid: pid, start: time.Now(), hub0: hub0, gen0: gen0, sys0: sys0}, nil
}

func (m *meter) finish(r *Result, f *Fleet) error {
	wall := time.Since(m.start)
	hub1, err := CPUTime(m.pid)
	if err != nil {
		return err
	}
	gen1, _ := CPUTime(os.Getpid())
	sys1, _ := SystemBusy()
	r.WallSeconds = wall.Seconds()
	r.HubCPUSeconds = (hub1 - m.hub0).Seconds()
	r.GenCPUSeconds = (gen1 - m.gen0).Seconds()
	r.OtherCPUSeconds = max(0, (sys1-m.sys0).Seconds()-r.HubCPUSeconds-r.GenCPUSeconds)
	if r.Deliveries > 0 {
		r.CPUSecPerMillion = r.HubCPUSeconds / float64(r.Deliveries) * 1e6
		r.DeliveriesPerSec = float64(r.Deliveries) / wall.Seconds()
	}
	q, n := f.Latency.Quantiles(0.5, 0.99)
	r.P50Ms = float64(q[0]) / float64(time.Millisecond)
	r.P99Ms = float64(q[1]) / float64(time.Millisecond)
	r.LatencyCount = n
	return nil
}

// roundTimeout bounds the wait for one broadcast round or the unicast tail.
const roundTimeout = 30 * time.Second

// Broadcast publishes pushes messages on hub.all.push to the hub with pid,
// in rounds of round: after each round it waits until every device of f
// has received every push so far, so no session's outbound queue holds
// more than round frames. It measures the hub's CPU over the whole run.
// Every device must receive every push exactly once.
func Broadcast(ctx context.Context, pid int, f *Fleet, p *Pusher, pushes, round int) (Result, error) {
	n := int64(f.Len())
	r := Result{Kind: "broadcast", Sessions: int(n), Pushes: pushes}
	round = max(round, 1)
	f.Latency.Reset()
	base := f.Pushes()
	m, err := startMeter(pid)
	if err != nil {
		return r, err
	}
	for sent := 0; sent < pushes; {
		k := min(round, pushes-sent)
		for range k {
			if err := p.Publish("hub.all.push"); err != nil {
				return r, err
			}
		}
		sent += k
		rctx, cancel := context.WithTimeout(ctx, roundTimeout)
		err := f.WaitPushes(rctx, base+n*int64(sent))
		cancel()
		if err != nil {
			return r, fmt.Errorf("broadcast round ending at push %d: %w", sent, err)
		}
	}
	r.Deliveries = f.Pushes() - base
	if err := m.finish(&r, f); err != nil {
		return r, err
	}
	if want := n * int64(pushes); r.Deliveries != want {
		return r, fmt.Errorf("broadcast: %d deliveries, want %d", r.Deliveries, want)
	}
	return r, nil
}

// Unicast publishes count pushes on hub.dev.<sn>.push, each to a device of
// f picked at random (seeded, so runs repeat), paced at rate per second,
// then waits until all have arrived. It measures the hub's CPU from the
// first publish to the last delivery.
func Unicast(ctx context.Context, pid int, f *Fleet, p *Pusher, count, rate int) (Result, error) {
	n := f.Len()
	r := Result{Kind: "unicast", Sessions: n, Pushes: count}
	if n == 0 || count <= 0 || rate <= 0 {
		return r, fmt.Errorf("unicast: need devices (%d), a count (%d) and a rate (%d)", n, count, rate)
	}
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = "hub.dev." + f.SN(i) + ".push"
	}
	rng := rand.New(rand.NewPCG(1, 2))
	f.Latency.Reset()
	base, d0 := f.Pushes(), f.Disconnects()
	m, err := startMeter(pid)
	if err != nil {
		return r, err
	}
	// Publish what is due every few milliseconds: a catch-up pace holds the
	// rate even when ticks arrive late on a busy machine.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for sent < count {
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("unicast: %d of %d published: %w", sent, count, ctx.Err())
		case <-tick.C:
		}
		due := min(count, int(time.Since(m.start).Seconds()*float64(rate))+1)
		for ; sent < due; sent++ {
			if err := p.Publish(subjects[rng.IntN(n)]); err != nil {
				return r, err
			}
		}
		if d := f.Disconnects(); d > d0 {
			return r, fmt.Errorf("unicast: %d connection(s) dropped: %s", d-d0, f.Stats().EndingsString())
		}
	}
	wctx, cancel := context.WithTimeout(ctx, roundTimeout)
	err = f.WaitPushes(wctx, base+int64(count))
	cancel()
	if err != nil {
		return r, fmt.Errorf("unicast: %w", err)
	}
	r.Deliveries = f.Pushes() - base
	if err := m.finish(&r, f); err != nil {
		return r, err
	}
	if r.Deliveries != int64(count) {
		return r, fmt.Errorf("unicast: %d deliveries, want %d", r.Deliveries, count)
	}
	return r, nil
}
