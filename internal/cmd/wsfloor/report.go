package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The comparison table of docs/perf/compare.sh: it reads wsload's results
// of run-all.sh in DIR, the floor's in DIR/floor and the connect ramp's in
// DIR/ramp, and prints the rows issue 13 sets goals on, each with its
// ratio and whether the goal is met.

// peers are the targets "best peer" is taken over.
var peers = []string{"centrifugo", "nats"}

// columns are the targets of the tables, in order.
var columns = []struct{ name, title string }{
	{"centrifugo", "Centrifugo"}, {"nats", "nats-server WS"}, {"hub", "hub"}, {"floor", "floor"},
}

type resultKey struct {
	target, scenario string
	clients          int
}

type results map[resultKey]*Result

func loadResults(dir string) (results, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	rs := results{}
	for _, f := range files {
		r, err := loadResult(f)
		if err != nil || r == nil {
			continue
		}
		rs[resultKey{r.Target, r.Scenario, r.Clients}] = r
	}
	return rs, nil
}

// loadResult reads one result; nil for a file that is not one.
func loadResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil || r.Target == "" || r.Scenario == "" {
		return nil, err
	}
	return &r, nil
}

func (rs results) get(target, scenario string, n int) *Result {
	r := rs[resultKey{target, scenario, n}]
	if r == nil || r.Error != "" {
		return nil
	}
	return r
}

// row is one line of the goals table: a figure per target, lower is
// better unless higher is set.
type row struct {
	label  string
	unit   string
	values map[string]float64 // by target; absent = not measured
	noisy  map[string]bool    // by target: taken while other work was running
	higher bool               // higher is better (connect rate)
	// goal is the line's goal as text, and met decides it from the
	// values (nil: no goal on this line).
	goal string
	met  func(v map[string]float64) (bool, bool)
}

func writeReport(w io.Writer, dir string) error {
	main, err := loadResults(dir)
	if err != nil {
		return err
	}
	floor, err := loadResults(filepath.Join(dir, "floor"))
	if err != nil {
		return err
	}
	for k, r := range floor {
		main[k] = r
	}
	if len(main) == 0 {
		return fmt.Errorf("no results in %s", dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "machine.txt")); err == nil {
		fmt.Fprintf(w, "```\n%s```\n\n", b)
	}

	var rows []row
	for _, n := range []int{1000, 10000} {
		rows = append(rows, publishRow(main, "broadcast", n, fmt.Sprintf("broadcast CPU-s per million deliveries, %s subscribers", thousands(float64(n)))))
		last := &rows[len(rows)-1]
		last.goal = "≤ 0.67x best peer, ≤ 1.25x floor"
		last.met = func(v map[string]float64) (bool, bool) {
			h, okh := v["hub"]
			b, okb := best(v, peers, false)
			f, okf := v["floor"]
			if !okh || !okb || !okf {
				return false, false
			}
			return h <= 0.67*b && h <= 1.25*f, true
		}
	}
	for _, n := range []int{1000, 10000} {
		rows = append(rows, publishRow(main, "unicast", n, fmt.Sprintf("unicast CPU-s per million, %s clients", thousands(float64(n)))))
		last := &rows[len(rows)-1]
		last.goal = "≤ 1.0x nats-server WS"
		last.met = func(v map[string]float64) (bool, bool) {
			h, okh := v["hub"]
			n, okn := v["nats"]
			return okh && okn && h <= n, okh && okn
		}
	}
	for _, n := range []int{1000, 10000} {
		r := row{label: fmt.Sprintf("unicast p99, %s clients", thousands(float64(n))), unit: "ms", values: map[string]float64{},
			goal: "≤ nats-server WS + 0.2 ms"}
		for _, c := range columns {
			if x := main.get(c.name, "unicast", n); x != nil && x.Latency != nil {
				r.set(c.name, x.Latency.P99, x)
			}
		}
		r.met = func(v map[string]float64) (bool, bool) {
			h, okh := v["hub"]
			n, okn := v["nats"]
			return okh && okn && h <= n+0.2, okh && okn
		}
		rows = append(rows, r)
	}
	for _, n := range []int{1000, 10000} {
		r := row{label: fmt.Sprintf("RSS per idle connection, %s", thousands(float64(n))), unit: "KiB", values: map[string]float64{}}
		for _, c := range columns {
			if x := main.get(c.name, "idle", n); x != nil {
				r.set(c.name, x.BytesPerConn/1024, x)
			}
		}
		if n == 10000 {
			r.goal = "≤ 20 KiB"
			r.met = func(v map[string]float64) (bool, bool) {
				h, ok := v["hub"]
				return ok && h <= 20, ok
			}
		}
		rows = append(rows, r)
	}
	for _, n := range []int{1000, 10000} {
		r := row{label: fmt.Sprintf("server CPU per connect, %s connects", thousands(float64(n))), unit: "µs", values: map[string]float64{}}
		for _, c := range columns {
			if x := main.get(c.name, "idle", n); x != nil && x.Connected > 0 {
				r.set(c.name, 1e6*x.ConnectServerCPUS/float64(x.Connected), x)
			}
		}
		if n == 10000 {
			r.goal = "≤ 0.7x best peer"
			r.met = func(v map[string]float64) (bool, bool) {
				h, okh := v["hub"]
				b, okb := best(v, peers, false)
				return okh && okb && h <= 0.7*b, okh && okb
			}
		}
		rows = append(rows, r)
	}
	for _, n := range []int{1000, 10000} {
		r := row{label: fmt.Sprintf("connects/s reached, %s", thousands(float64(n))), unit: "/s", values: map[string]float64{}, higher: true}
		for _, c := range columns {
			if x := main.get(c.name, "idle", n); x != nil {
				r.set(c.name, x.ConnectRate, x)
				if x.ConnectRateLimit > 0 && !strings.Contains(r.label, "offered") {
					r.label += fmt.Sprintf(" (%s/s offered)", thousands(x.ConnectRateLimit))
				}
			}
		}
		rows = append(rows, r)
	}

	fmt.Fprintln(w, "### Goals of issue 13, one run")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Best peer: the better of Centrifugo and nats-server WS on the row. Floor: wsfloor, one write(2) per frame per socket, no hub logic.")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| row |")
	for _, c := range columns {
		fmt.Fprintf(w, " %s |", c.title)
	}
	fmt.Fprintln(w, " hub vs best peer | hub vs floor | goal | met |")
	fmt.Fprint(w, "| --- |")
	for range columns {
		fmt.Fprint(w, " ---: |")
	}
	fmt.Fprintln(w, " ---: | ---: | --- | --- |")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |", r.label)
		for _, c := range columns {
			mark := ""
			if r.noisy[c.name] {
				mark = " ⚠"
			}
			fmt.Fprintf(w, " %s%s |", figure(r.values, c.name, r.unit), mark)
		}
		vsBest, vsFloor := "–", "–"
		if h, ok := r.values["hub"]; ok {
			if b, ok := best(r.values, peers, r.higher); ok && b > 0 {
				vsBest = fmt.Sprintf("%.2fx", h/b)
			}
			if f, ok := r.values["floor"]; ok && f > 0 {
				vsFloor = fmt.Sprintf("%.2fx", h/f)
			}
			if r.unit == "ms" {
				if n, ok := r.values["nats"]; ok {
					vsBest += fmt.Sprintf(" (%+.2f ms vs nats)", h-n)
				}
			}
		}
		met := ""
		if r.met != nil {
			switch ok, known := r.met(r.values); {
			case !known:
				met = "not measured"
			case ok:
				met = "yes"
			default:
				met = "**no**"
			}
		}
		fmt.Fprintf(w, " %s | %s | %s | %s |\n", vsBest, vsFloor, r.goal, met)
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "⚠: other processes used more than a tenth of a core during that run (see Publish runs); take it again on a quiet machine.")

	if err := writeRamp(w, filepath.Join(dir, "ramp")); err != nil {
		return err
	}
	writeDetails(w, main)
	return nil
}

// publishRow is the CPU-s per million deliveries of every target.
func publishRow(rs results, scenario string, n int, label string) row {
	r := row{label: label, unit: "s", values: map[string]float64{}}
	for _, c := range columns {
		if x := rs.get(c.name, scenario, n); x != nil && x.ServerCPUPerMillion > 0 {
			r.set(c.name, x.ServerCPUPerMillion, x)
		}
	}
	return r
}

// set records target's figure v, taken by run x.
func (r *row) set(target string, v float64, x *Result) {
	r.values[target] = v
	if noisy(x) {
		if r.noisy == nil {
			r.noisy = map[string]bool{}
		}
		r.noisy[target] = true
	}
}

// noisy reports a run during which other processes used more than a tenth
// of a core (benchreport's mark): its figure is worth taking again.
func noisy(x *Result) bool {
	win := x.WindowS
	if x.Scenario == "idle" {
		win = x.ConnectSeconds
	}
	return win > 0 && x.OtherCPUS > 0.1*win
}

// writeRamp prints the connect ramp: for each offered rate and target the
// connects/s reached and the errors, then each target's highest rate
// reached with no error and no drop.
func writeRamp(w io.Writer, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return err
	}
	type step struct {
		target  string
		offered float64
	}
	byStep := map[step]*Result{}
	offered := map[float64]bool{}
	n := 0
	for _, f := range files {
		r, err := loadResult(f)
		if err != nil || r == nil || r.Scenario != "idle" {
			continue
		}
		byStep[step{r.Target, r.ConnectRateLimit}] = r
		offered[r.ConnectRateLimit] = true
		n = r.Clients
	}
	var rates []float64
	for o := range offered {
		rates = append(rates, o)
	}
	sort.Float64s(rates)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "### Connect ramp, idle, %s clients (connect+auth+subscribe)\n\n", thousands(float64(n)))
	fmt.Fprintln(w, "Each cell: connects/s reached, errors (connect errors + dropped after connect), server CPU per connect.")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| offered |")
	for _, c := range columns[:3] {
		fmt.Fprintf(w, " %s |", c.title)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: |")
	sustained := map[string]float64{}
	for _, o := range rates {
		fmt.Fprintf(w, "| %s/s |", thousands(o))
		for _, c := range columns[:3] {
			r := byStep[step{c.name, o}]
			switch {
			case r == nil:
				fmt.Fprint(w, " – |")
			case r.Error != "":
				fmt.Fprintf(w, " error: %s |", oneLine(r.Error))
			default:
				errs := r.ConnectErrors + r.DroppedAfterConnect
				us := 0.0
				if r.Connected > 0 {
					us = 1e6 * r.ConnectServerCPUS / float64(r.Connected)
				}
				mark := ""
				if noisy(r) {
					mark = " ⚠"
				}
				fmt.Fprintf(w, " %s/s, %d err, %.0f µs%s |", thousands(r.ConnectRate), errs, us, mark)
				if errs == 0 && r.Connected == r.Clients {
					sustained[c.name] = math.Max(sustained[c.name], r.ConnectRate)
				}
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "| **reached at 0 errors** |")
	for _, c := range columns[:3] {
		fmt.Fprintf(w, " %s |", figure(sustained, c.name, "/s"))
	}
	fmt.Fprintln(w)
	goal := "goal: hub ≥ 1.5x the best peer's rate at 0 errors"
	if h, ok := sustained["hub"]; ok {
		if b, ok := best(sustained, peers, true); ok && b > 0 {
			verdict := "met"
			if h < 1.5*b {
				verdict = "**not met**"
			}
			goal = fmt.Sprintf("hub vs best peer: %.2fx (%s; %s)", h/b, verdict, goal)
		}
	}
	fmt.Fprintf(w, "\n%s. A peer that never erred was not pushed to its limit: raise RAMP_RATES.\n", goal)
	return nil
}

// writeDetails lists every publish run with what qualifies its figure:
// deliveries lost, latency, and the CPU of everything else on the box.
func writeDetails(w io.Writer, rs results) {
	var keys []resultKey
	for k, r := range rs {
		if k.scenario != "idle" || r.Error != "" {
			keys = append(keys, k)
		}
	}
	order := map[string]int{"centrifugo": 0, "nats": 1, "hub": 2, "floor": 3}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.scenario != b.scenario {
			return a.scenario < b.scenario
		}
		if a.clients != b.clients {
			return a.clients < b.clients
		}
		return order[a.target] < order[b.target]
	})
	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Publish runs")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | N | target | rate | deliveries/s | lost | p50 / p99 / max ms | server CPU s | load tool CPU s | other procs CPU s | machine busy |")
	fmt.Fprintln(w, "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
	for _, k := range keys {
		r := rs[k]
		if r.Error != "" {
			fmt.Fprintf(w, "| %s | %s | %s | | | | error: %s | | | | |\n", k.scenario, thousands(float64(k.clients)), k.target, oneLine(r.Error))
			continue
		}
		lat := "–"
		if r.Latency != nil {
			lat = fmt.Sprintf("%.2f / %.2f / %.1f", r.Latency.P50, r.Latency.P99, r.Latency.Max)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %g | %s | %d of %s | %s | %.2f | %.2f | %.2f | %.0f%% |\n",
			k.scenario, thousands(float64(k.clients)), k.target, r.Rate, thousands(r.DeliveriesPerSec), r.Lost,
			thousands(float64(r.Expected)), lat, r.ServerCPUS, r.LoadToolCPUS, r.OtherCPUS, r.MachineBusyPct)
	}
}

// best is the best value among targets (lowest, or highest when higher).
func best(v map[string]float64, targets []string, higher bool) (float64, bool) {
	var b float64
	found := false
	for _, t := range targets {
		x, ok := v[t]
		if !ok || x <= 0 {
			continue
		}
		if !found || (higher && x > b) || (!higher && x < b) {
			b, found = x, true
		}
	}
	return b, found
}

func figure(v map[string]float64, target, unit string) string {
	x, ok := v[target]
	if !ok {
		return "–"
	}
	switch unit {
	case "/s":
		return thousands(x) + "/s"
	case "µs":
		return fmt.Sprintf("%.0f µs", x)
	case "s":
		return fmt.Sprintf("%.1f", x)
	case "ms":
		return fmt.Sprintf("%.2f ms", x)
	case "KiB":
		return fmt.Sprintf("%.1f KiB", x)
	}
	return fmt.Sprintf("%g", x)
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func oneLine(s string) string {
	s = strings.NewReplacer("\n", " ", "|", "/").Replace(s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
