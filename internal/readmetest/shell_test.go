//go:build unix

package readmetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
)

// The addresses the README's commands use, which the test rewrites to
// free ports: make run's node and its embedded NATS server (hubctl's
// default).
const (
	defaultListen     = "127.0.0.1:8080"
	defaultNATSListen = "127.0.0.1:4222"
	demoDevices       = 12
)

// runners are the commands of README shell lines the test runs: a line
// starting with another (make, nats-server...) is not run. nats (natscli)
// runs when it is installed.
var runners = map[string]bool{"hubctl": true, "devsim": true, "curl": true, "nats": true}

// TestReadmeShell starts what `make run` starts (docs/dev/run.sh: a hub
// --dev with its embedded NATS server, the simulated fleet registered
// with its types and groups) on free ports, then runs, in a shell in a
// directory whose bin/ holds the freshly built hub, hubctl and devsim,
// every hubctl, devsim and curl line of README.md's ```sh blocks in order,
// with the exports the README makes before it. Each must exit 0; a line
// marked "until Ctrl-C" must still run, with output, when interrupted.
// Only the default addresses are rewritten (127.0.0.1:8080 and :4222 in
// the lines, HUB_NATS_URL for hubctl's default). Then the README's Go
// snippets run, in order, as the device and admin they show; each push a
// `hubctl push` line made must have reached robots, exactly those its
// comment names when it names some (SIM-0003 and SIM-0011); and the
// README's table of the demo fleet must match hubctl device list. Last,
// run.sh must exit 0 on SIGTERM.
func TestReadmeShell(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts make run's processes; not in -short")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("make run needs %s, which is not installed", tool)
		}
	}
	root := moduleRoot(t)
	var lines []shellLine
	for _, b := range blocks(t, root, "README.md") {
		if b.lang != "sh" || b.marker == markNotDemo || notDemoSections[b.section] {
			continue
		}
		lines = append(lines, shellLines(b)...)
	}
	if len(lines) == 0 {
		t.Fatal("no shell line found in README.md: the markdown reader is broken")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "./cmd/hub", "./cmd/hubctl", "./cmd/devsim")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built hub, hubctl and devsim in %v", time.Since(start).Round(time.Millisecond))

	ports := freePorts(t, 2)
	listen, natsListen := "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1]
	demo := startDemo(t, root, bin, filepath.Join(work, "data"), listen, natsListen)
	natstest.Eventually(t, 30*time.Second, func() error {
		if n := sessions(listen); n != demoDevices {
			return fmt.Errorf("%d sessions, want the %d robots\nmake run's output:\n%s", n, demoDevices, demo.out.String())
		}
		return nil
	})
	t.Logf("make run ready with %d robots after %v", demoDevices, time.Since(start).Round(time.Millisecond))

	sh := &shell{dir: work, env: lineEnv(natsListen), rewrite: strings.NewReplacer(defaultListen, listen, defaultNATSListen, natsListen)}
	var pushes []pushLine
	for _, l := range lines {
		if strings.HasPrefix(l.text, "export ") {
			// An export with a command in it: the command must succeed
			// (a bare assignment has its status, an export has not).
			if runners[l.command] {
				sh.run(ctx, t, l, strings.TrimPrefix(l.text, "export "))
			}
			sh.prelude = append(sh.prelude, l.text)
			continue
		}
		if !runners[l.command] {
			t.Logf("%s\n  not run (%s)", l, l.command)
			continue
		}
		if l.command == "nats" {
			if _, err := exec.LookPath("nats"); err != nil {
				t.Logf("%s\n  not run: natscli is not installed", l)
				continue
			}
		}
		if strings.Contains(l.comment, markEndless) {
			sh.runEndless(ctx, t, l)
			continue
		}
		out := sh.run(ctx, t, l, l.text)
		if f := strings.Fields(l.text); len(f) > 1 && f[0] == "hubctl" && f[1] == "push" {
			pushes = append(pushes, pushLine{l, strings.TrimSpace(out), regexp.MustCompile(`SIM-\d+`).FindAllString(l.comment, -1)})
		}
	}
	if t.Failed() {
		t.Fatalf("make run's output:\n%s", demo.out.String())
	}
	runSnippets(ctx, t, root, work, sh)
	checkRecipients(ctx, t, sh, pushes)
	checkFleetTable(ctx, t, root, sh)
	t.Logf("%d README lines in %v", len(lines), time.Since(start).Round(time.Millisecond))
}

// shellLine is one command line of a README shell block.
type shellLine struct {
	file    string
	line    int
	text    string // the command, without its comment
	comment string
	command string // its first word
}

func (l shellLine) String() string { return fmt.Sprintf("%s:%d: %s", l.file, l.line, l.text) }

func shellLines(b block) []shellLine {
	var out []shellLine
	for i, raw := range b.lines {
		text, comment := splitComment(raw)
		if text == "" {
			continue
		}
		out = append(out, shellLine{file: b.file, line: b.line + i, text: text, comment: comment, command: firstCommand(text)})
	}
	return out
}

// firstCommand is the command an export line runs ($(hubctl ...)), else
// the line's first word.
func firstCommand(text string) string {
	if rest, ok := strings.CutPrefix(text, "export "); ok {
		if _, sub, ok := strings.Cut(rest, "$("); ok {
			return strings.Fields(sub)[0]
		}
		return "export"
	}
	return strings.Fields(text)[0]
}

// shell runs README lines with bash in dir, each after the exports the
// README made before it.
type shell struct {
	dir     string
	env     []string
	prelude []string
	rewrite *strings.Replacer
}

func (s *shell) command(ctx context.Context, line string) *exec.Cmd {
	script := "set -eo pipefail\n" + strings.Join(s.prelude, "\n") + "\n" + s.rewrite.Replace(line)
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir, cmd.Env = s.dir, s.env
	// Its own process group: an interrupt reaches the whole pipeline.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// run runs line and returns its standard output; a failure is an error
// of the test, naming the README line.
func (s *shell) run(ctx context.Context, t *testing.T, l shellLine, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := s.command(ctx, line)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	if err := cmd.Run(); err != nil {
		t.Errorf("%s\n  failed after %v: %v\n  stdout: %s\n  stderr: %s", l, time.Since(began).Round(time.Millisecond), err, stdout.String(), stderr.String())
		return ""
	}
	t.Logf("%s\n  -> %s", l, firstLine(stdout.String()))
	return stdout.String()
}

// runEndless runs a line that runs until interrupted: once it has printed
// a line it must still be running, and exit 0 on SIGINT.
func (s *shell) runEndless(ctx context.Context, t *testing.T, l shellLine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd := s.command(ctx, l.text)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	exited := false
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !exited && !strings.Contains(stdout.String(), "\n") {
		select {
		case err = <-done:
			exited = true
		case <-tick.C:
		case <-ctx.Done():
			exited = true
			err = <-done
		}
	}
	if exited {
		t.Errorf("%s\n  ended before Ctrl-C: %v\n  stdout: %s\n  stderr: %s", l, err, stdout.String(), stderr.String())
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	if err := <-done; err != nil {
		t.Errorf("%s\n  on Ctrl-C: %v\n  stderr: %s", l, err, stderr.String())
		return
	}
	t.Logf("%s\n  -> %s (until Ctrl-C)", l, firstLine(stdout.String()))
}

// lineEnv is the environment of the README lines: the test's PATH (the
// README's export puts bin/ first), HOME, and hubctl's default NATS
// address rewritten; no other HUB_ variable.
func lineEnv(natsListen string) []string {
	env := []string{"HUB_NATS_URL=nats://" + natsListen, "NATS_URL=nats://" + natsListen, "LC_ALL=C.UTF-8"}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// demo is docs/dev/run.sh running, as make run runs it.
type demo struct {
	cmd *exec.Cmd
	out *syncBuffer
}

// startDemo runs docs/dev/run.sh with the binaries in bin, on listen and
// natsListen, without a terminal, and waits for its banner; the test's
// cleanup stops it (SIGTERM, as Ctrl-C does without a terminal) and
// checks that it exits 0.
func startDemo(t *testing.T, root, bin, data, listen, natsListen string) *demo {
	t.Helper()
	d := &demo{out: &syncBuffer{}}
	cmd := exec.Command("bash", filepath.Join(root, "docs", "dev", "run.sh"))
	cmd.Dir = root
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HUB_") {
			env = append(env, kv)
		}
	}
	// Robots stay connected for the test (the simulated random
	// disconnects would make a command to one fail now and then).
	cmd.Env = append(env, "BIN="+bin, "DATA="+data, "LISTEN="+listen, "NATS_LISTEN="+natsListen,
		"DEVSIM_FLAGS=--disconnect-rate 0")
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = cmd
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("make run (docs/dev/run.sh) on SIGTERM: %v\n%s", err, d.out.String())
			}
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("make run (docs/dev/run.sh) did not stop within 30s of SIGTERM\n%s", d.out.String())
		}
		// Nothing of the group may outlive it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.out.String(), "stop            Ctrl-C") {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("make run (docs/dev/run.sh) exited before its banner: %v\n%s", err, d.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run (docs/dev/run.sh) printed no banner within 2m:\n%s", d.out.String())
		}
	}
	return d
}

// sessions is the node's session count from /healthz, -1 when it does
// not answer.
func sessions(listen string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + listen + "/healthz")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var h struct {
		Sessions int `json:"sessions"`
	}
	if json.NewDecoder(resp.Body).Decode(&h) != nil {
		return -1
	}
	return h.Sessions
}

// pushLine is a `hubctl push` line that ran: the id it printed and the
// robots its comment says get it.
type pushLine struct {
	shellLine
	id   string
	want []string
}

// checkRecipients follows the event records (hubctl tail event, from
// before the pushes) until each push is reported received by robots:
// exactly the ones its line's comment names, or any when it names none.
func checkRecipients(ctx context.Context, t *testing.T, sh *shell, pushes []pushLine) {
	t.Helper()
	if len(pushes) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := sh.command(ctx, "exec hubctl tail event --since 5m")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]bool{} // push id: robots
	for _, p := range pushes {
		got[p.id] = map[string]bool{}
	}
	complete := func() bool {
		for _, p := range pushes {
			g := got[p.id]
			if len(g) == 0 {
				return false
			}
			for _, sn := range p.want {
				if !g[sn] {
					return false
				}
			}
		}
		return true
	}
	sc := bufio.NewScanner(out)
	for !complete() && sc.Scan() {
		var rec struct {
			SN    string `json:"sn"`
			Event string `json:"event"`
			Data  struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Event == "push_received" && got[rec.Data.ID] != nil {
			got[rec.Data.ID][rec.SN] = true
		}
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	for _, p := range pushes {
		robots := slices.Sorted(maps.Keys(got[p.id]))
		switch {
		case len(robots) == 0:
			t.Errorf("%s\n  push %s: no robot reported it received (tail: %v %s)", p.shellLine, p.id, werr, stderr.String())
		case len(p.want) > 0 && !slices.Equal(robots, slices.Sorted(slices.Values(p.want))):
			t.Errorf("%s\n  push %s reached %v, the README says %v", p.shellLine, p.id, robots, p.want)
		default:
			t.Logf("%s\n  push %s reached %v", p.shellLine, p.id, robots)
		}
	}
}

// runSnippets runs the README's Go snippets, in order, each as a function
// of ctx (30 s), in one program started like the README lines (after the
// README's exports: the device's key), with 127.0.0.1:8080 rewritten.
// A snippet fails by log.Fatal, or by not returning.
func runSnippets(ctx context.Context, t *testing.T, root, work string, sh *shell) {
	t.Helper()
	var snippets []block
	for _, b := range blocks(t, root, "README.md") {
		if b.lang == "go" && b.marker != markNotSnippet && b.marker != markNotDemo {
			for i := range b.lines {
				b.lines[i] = sh.rewrite.Replace(b.lines[i])
			}
			snippets = append(snippets, b)
		}
	}
	if len(snippets) == 0 {
		return
	}
	prog := filepath.Join(work, "readme-snippets")
	if err := buildSnippets(ctx, root, t.TempDir(), "snippetsmain", snippetFile(snippets, true), prog); err != nil {
		t.Fatalf("the README's Go snippets do not build: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(len(snippets))*40*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := sh.command(ctx, "exec "+prog)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	for i, b := range snippets {
		if !strings.Contains(stdout.String(), fmt.Sprintf("snippet %d done\n", i)) {
			t.Errorf("%s:%d: the Go snippet did not run to its end (%v)\n  stdout: %s\n  stderr: %s", b.file, b.line, err, stdout.String(), stderr.String())
			return
		}
		t.Logf("%s:%d: the Go snippet ran", b.file, b.line)
	}
	if err != nil {
		t.Errorf("the README's Go snippets: %v\n  stderr: %s", err, stderr.String())
	}
}

// fleetRow is a row of the README's table of the demo fleet:
// | SIM-0001, SIM-0009 | `retail` | `mall-east` |
var fleetRow = regexp.MustCompile("^\\| (SIM-\\d+(?:, SIM-\\d+)*) \\| `([^`]+)` \\| `([^`]+)` \\|$")

// checkFleetTable checks the README's table of the demo fleet against
// what hubctl device list prints: every robot of the table, with its type
// and group, and no robot of make run missing from it.
func checkFleetTable(ctx context.Context, t *testing.T, root string, sh *shell) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(string(readme), "\n") {
		if m := fleetRow.FindStringSubmatch(line); m != nil {
			for _, sn := range strings.Split(m[1], ", ") {
				want[sn] = m[2] + " " + m[3]
			}
		}
	}
	if len(want) != demoDevices {
		t.Fatalf("README.md: the table of the demo fleet names %d robots, make run runs %d", len(want), demoDevices)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := sh.command(ctx, "hubctl device list").Output()
	if err != nil {
		t.Fatalf("hubctl device list: %v", err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			got[f[0]] = f[1] + " " + f[2]
		}
	}
	for sn, tg := range want {
		if got[sn] != tg {
			t.Errorf("README.md's table of the demo fleet: %s is %q, hubctl device list says %q", sn, tg, got[sn])
		}
	}
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, p)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
