package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleethub/fleethub/hub/wire"
)

// TestMain lets the test binary be its own client process, as the program
// is: run re-executes os.Executable().
func TestMain(m *testing.M) {
	if env := os.Getenv(clientEnv); env != "" {
		os.Exit(clientMain(env))
	}
	os.Exit(m.Run())
}

// TestFloorDeliversEveryFrame runs the floor as the program runs (server
// here, clients in a second process) with 50 clients for 2 s and checks
// that every frame arrived, parsed, and that the JSON result and the
// summary say so.
func TestFloorDeliversEveryFrame(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		rate     string
		sent     int64
		expected int64
	}{
		{"broadcast", "100", 200, 200 * 50},
		{"unicast", "400", 800, 800},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "floor.json")
			var stdout, stderr bytes.Buffer
			code := serverMain([]string{"-scenario", tc.scenario, "-clients", "50", "-rate", tc.rate,
				"-duration", "2s", "-warmup", "0s", "-drain", "60s", "-stall", "20s", "-timeout", "120s",
				"-out", out}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d; stdout %s; stderr %s", code, stdout.String(), stderr.String())
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var r Result
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("result does not parse: %v\n%s", err, b)
			}
			if r.Error != "" || r.Connected != 50 || r.ConnectErrors != 0 || r.DroppedAfterConnect != 0 {
				t.Fatalf("error %q, connected %d, connect errors %d, dropped %d", r.Error, r.Connected, r.ConnectErrors, r.DroppedAfterConnect)
			}
			if r.Sent != tc.sent || r.Expected != tc.expected || r.Delivered != tc.expected || r.Lost != 0 || r.Unparsed != 0 {
				t.Fatalf("sent %d (want %d), expected %d, delivered %d (want %d), lost %d, unparsed %d",
					r.Sent, tc.sent, r.Expected, r.Delivered, tc.expected, r.Lost, r.Unparsed)
			}
			if r.Latency == nil || r.Latency.P99 <= 0 || r.ServerCPUS <= 0 || r.ServerCPUPerMillion <= 0 {
				t.Fatalf("latency %+v, server CPU %g s (%g s/M)", r.Latency, r.ServerCPUS, r.ServerCPUPerMillion)
			}
			if want := "floor " + tc.scenario + " N=50 rate=" + tc.rate + ": sent "; !strings.HasPrefix(stdout.String(), want) {
				t.Fatalf("summary %q, want it to start with %q", stdout.String(), want)
			}
		})
	}
}

// TestFrameIsTheHubsPush checks that a floor frame is one final unmasked
// text frame holding exactly what the hub encodes for the bench's push.
func TestFrameIsTheHubsPush(t *testing.T) {
	fr := newFramer(128)
	frame, err := fr.frame(1764633600123456789, 42)
	if err != nil {
		t.Fatal(err)
	}
	if frame[0] != 0x81 || frame[1] != 126 {
		t.Fatalf("header % x: want a final text frame with a 16-bit length, unmasked", frame[:2])
	}
	payload := frame[4:]
	if n := int(binary.BigEndian.Uint16(frame[2:4])); n != len(payload) {
		t.Fatalf("length field %d, payload %d bytes", n, len(payload))
	}
	var p wire.Push
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatalf("payload is not a push: %v: %s", err, payload)
	}
	want, err := wire.EncodePush(benchService, p.ID, p.Values)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(payload, want) {
		t.Fatalf("payload\n%s\nwant\n%s", payload, want)
	}
	if p.Op != wire.OpPush || p.Service != "/push/bench" || len(p.ID) != 22 {
		t.Fatalf("op %q, service %q, id %q", p.Op, p.Service, p.ID)
	}
	var v struct {
		T int64  `json:"t"`
		S int64  `json:"s"`
		P string `json:"p"`
	}
	if err := json.Unmarshal(p.Values, &v); err != nil || v.T != 1764633600123456789 || v.S != 42 || len(v.P) != 80 {
		t.Fatalf("values %s: %+v, %v", p.Values, v, err)
	}
	if ts, seq, ok := parseTS(payload); !ok || ts != v.T || seq != 42 {
		t.Fatalf("parseTS: %d %d %v", ts, seq, ok)
	}
}

// TestReport builds the comparison table from a directory laid out as
// docs/perf/compare.sh leaves it and checks the ratios and verdicts.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r Result) {
		t.Helper()
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bcast := func(target string, cpm float64) Result {
		return Result{Target: target, Scenario: "broadcast", Clients: 10000, ServerCPUPerMillion: cpm, Latency: &Latency{P99: 1}}
	}
	write("centrifugo-broadcast-10000.json", bcast("centrifugo", 20))
	write("nats-broadcast-10000.json", bcast("nats", 16))
	write("hub-broadcast-10000.json", bcast("hub", 10))
	write("floor/floor-broadcast-10000.json", bcast("floor", 9))
	idle := func(target string, offered, reached float64, errs int) Result {
		return Result{Target: target, Scenario: "idle", Clients: 10000, Connected: 10000 - errs, ConnectErrors: errs,
			ConnectRateLimit: offered, ConnectRate: reached, ConnectServerCPUS: 2}
	}
	write("ramp/nats-idle-10000-r5000.json", idle("nats", 5000, 4990, 0))
	write("ramp/nats-idle-10000-r10000.json", idle("nats", 10000, 6000, 12))
	write("ramp/hub-idle-10000-r5000.json", idle("hub", 5000, 4995, 0))
	write("ramp/hub-idle-10000-r10000.json", idle("hub", 10000, 9000, 0))
	write("not-a-result.json", Result{})

	var out bytes.Buffer
	if err := writeReport(&out, dir); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| broadcast CPU-s per million deliveries, 10,000 subscribers | 20.0 | 16.0 | 10.0 | 9.0 | 0.62x | 1.11x | ≤ 0.67x best peer, ≤ 1.25x floor | yes |",
		"| 10,000/s | – | 6,000/s, 12 err, 200 µs | 9,000/s, 0 err, 200 µs |",
		"| **reached at 0 errors** | – | 4,990/s | 9,000/s |",
		"hub vs best peer: 1.80x (met;",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
