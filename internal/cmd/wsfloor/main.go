// Command wsfloor is the write(2) floor of the hub's push benchmarks: a
// WebSocket server with no hub logic that writes to N loopback WebSockets
// exactly the frames the hub writes in ../shared/bench's broadcast and
// unicast scenarios, one write per frame per socket from one goroutine,
// at the same rate, for the same duration. Its clients run in a second
// process (the program re-executes itself), read and count every frame and
// time it from the "t" it carries. It reports the server process's CPU
// seconds per million deliveries, deliveries, lost and latency, in the
// JSON shape of wsload's results, and a one-line summary.
//
//	wsfloor -scenario broadcast -clients 10000 -rate 4 -duration 20s -out floor.json
//	wsfloor -scenario unicast -clients 10000 -rate 2000 -duration 20s
//	wsfloor -report DIR    # the comparison table of docs/perf/compare.sh
//
// Loopback only: it listens on 127.0.0.1 and dials from 127.0.0.0/8.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// Latency is wsload's latency block, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Result is a floor run in the shape of wsload's result (the fields that
// apply), plus frame_bytes and unparsed_frames.
type Result struct {
	Target        string            `json:"target"`
	TargetVersion string            `json:"target_version"`
	TargetOptions map[string]string `json:"target_options,omitempty"`
	Scenario      string            `json:"scenario"`
	Clients       int               `json:"clients"`
	Rate          float64           `json:"rate"`
	DurationS     float64           `json:"duration_s"`
	PayloadBytes  int               `json:"payload_bytes"`
	FrameBytes    int               `json:"frame_bytes"`
	StartedAt     string            `json:"started_at"`
	GoVersion     string            `json:"go_version"`
	NumCPU        int               `json:"num_cpu"`
	RlimitNofile  uint64            `json:"rlimit_nofile"`

	Connected           int      `json:"connected"`
	ConnectErrors       int      `json:"connect_errors"`
	ConnectErrorSample  []string `json:"connect_error_sample,omitempty"`
	ConnectSeconds      float64  `json:"connect_seconds"`
	ConnectRate         float64  `json:"connect_rate_per_s"`
	ConnectRateLimit    float64  `json:"connect_rate_limit_per_s"`
	DroppedAfterConnect int      `json:"dropped_after_connect"`
	ConnectServerCPUS   float64  `json:"connect_server_cpu_s"`

	RSSDeltaKiB    int64   `json:"rss_delta_kib"`
	BytesPerConn   float64 `json:"bytes_per_conn"`
	LoadToolRSSKiB int64   `json:"load_tool_rss_kib"`

	Sent             int64    `json:"sent"`
	PublishRate      float64  `json:"publish_rate_per_s"`
	Expected         int64    `json:"expected_deliveries"`
	Delivered        int64    `json:"delivered"`
	Lost             int64    `json:"lost"`
	Unparsed         int64    `json:"unparsed_frames"`
	WindowS          float64  `json:"window_s"`
	DeliveriesPerSec float64  `json:"deliveries_per_s"`
	Latency          *Latency `json:"latency,omitempty"`

	ServerCPUS          float64 `json:"server_cpu_s"`
	ServerCPUPerMillion float64 `json:"server_cpu_s_per_million_deliveries"`
	LoadToolCPUS        float64 `json:"load_tool_cpu_s"`
	MachineBusyPct      float64 `json:"machine_busy_pct"`
	OtherCPUS           float64 `json:"other_cpu_s"`
	KernelIRQS          float64 `json:"kernel_irq_cpu_s"`
	StealS              float64 `json:"steal_s"`

	Notes []string `json:"notes,omitempty"`
	Error string   `json:"error,omitempty"`
}

func main() {
	if env := os.Getenv(clientEnv); env != "" {
		os.Exit(clientMain(env))
	}
	os.Exit(serverMain(os.Args[1:], os.Stdout, os.Stderr))
}

// clientMain is the re-executed client process.
func clientMain(env string) int {
	var cfg clientConfig
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "wsfloor client: %s: %v\n", clientEnv, err)
		return 2
	}
	// The server side kills this process when it goes (Pdeathsig); a
	// signal ends the dialing.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runClient(ctx, cfg, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "wsfloor client: %v\n", err)
		return 1
	}
	return 0
}

func serverMain(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("wsfloor", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var cfg config
	fl.StringVar(&cfg.Scenario, "scenario", "broadcast", "broadcast (every message to every socket) or unicast (each to one random socket)")
	fl.IntVar(&cfg.Clients, "clients", 1000, "number of WebSocket clients")
	fl.Float64Var(&cfg.Rate, "rate", 40, "messages per second (the bench: broadcast 40000/clients, unicast 2000)")
	fl.DurationVar(&cfg.Duration, "duration", 20*time.Second, "publish duration")
	fl.IntVar(&cfg.Payload, "payload", 128, "benchmark payload bytes, as wsload's -payload")
	fl.Float64Var(&cfg.ConnectRate, "connect-rate", 5000, "new connections per second (limit)")
	fl.IntVar(&cfg.ConnectConc, "connect-concurrency", 200, "handshakes in flight at most")
	fl.StringVar(&cfg.SrcIPs, "src-ips", "127.0.0.2-127.0.0.50", "source address range of the client sockets (loopback)")
	fl.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "pause between connecting and publishing")
	fl.DurationVar(&cfg.Drain, "drain", 8*time.Second, "longest wait for deliveries after publishing stops")
	fl.DurationVar(&cfg.Stall, "stall", 1500*time.Millisecond, "the drain ends after this long without a delivery")
	fl.Int64Var(&cfg.Seed, "seed", 1, "random seed of the unicast targets")
	fl.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the server's CPU profile of the publish window and drain to this file")
	out := fl.String("out", "", "write the JSON result here")
	timeout := fl.Duration("timeout", 150*time.Second, "hard limit for the whole run")
	report := fl.String("report", "", "print the comparison table of the results in this directory (docs/perf/compare.sh) and exit")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *report != "" {
		if err := writeReport(stdout, *report); err != nil {
			fmt.Fprintf(stderr, "wsfloor: %v\n", err)
			return 1
		}
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := run(ctx, cfg)
	code := 0
	if err != nil {
		res.Error = err.Error()
		code = 1
	}
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
			err = os.WriteFile(*out, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "wsfloor: %v\n", err)
			code = 1
		}
	}
	fmt.Fprintln(stdout, summary(res))
	return code
}

// summary is the one-line summary, worded as wsload's.
func summary(r *Result) string {
	if r.Error != "" {
		return fmt.Sprintf("%s %s N=%d: ERROR %s", r.Target, r.Scenario, r.Clients, r.Error)
	}
	l := r.Latency
	if l == nil {
		l = &Latency{}
	}
	return fmt.Sprintf("%s %s N=%d rate=%g: sent %d, delivered %d/%d (lost %d), %.0f deliveries/s, latency p50 %.2f p90 %.2f p99 %.2f max %.2f ms, server CPU %.2fs (%.2f s/M), load tool CPU %.2fs, other procs CPU %.2fs, kernel irq %.2fs, steal %.2fs, machine busy %.0f%%, frame %d B",
		r.Target, r.Scenario, r.Clients, r.Rate, r.Sent, r.Delivered, r.Expected, r.Lost, r.DeliveriesPerSec,
		l.P50, l.P90, l.P99, l.Max, r.ServerCPUS, r.ServerCPUPerMillion, r.LoadToolCPUS, r.OtherCPUS, r.KernelIRQS, r.StealS, r.MachineBusyPct, r.FrameBytes)
}
