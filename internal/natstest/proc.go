package natstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// ServerBinary builds the nats-server of the version go.mod pins (`go
// build github.com/nats-io/nats-server/v2`) once per test process and
// returns its path. The build is shared between packages through a
// directory named for the version, replaced atomically.
func ServerBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		version := "devel"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, d := range bi.Deps {
				if d.Path == "github.com/nats-io/nats-server/v2" {
					version = d.Version
				}
			}
		}
		dir := filepath.Join(os.TempDir(), "fleethub-test-bin")
		if binErr = os.MkdirAll(dir, 0o755); binErr != nil {
			return
		}
		binPath = filepath.Join(dir, "nats-server-"+version)
		if _, err := os.Stat(binPath); err == nil {
			return
		}
		tmp := fmt.Sprintf("%s.%d", binPath, os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build nats-server: %w\n%s", err, out)
			return
		}
		binErr = os.Rename(tmp, binPath)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// FreePort returns a loopback port free at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is a nats-server child process started from a configuration file.
type Proc struct {
	// Port is the client port the configuration listens on.
	Port int
	// Conf is the configuration file's path.
	Conf string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
	bin  string
	env  []string
	args []string // after -c Conf
	// started is set once the first start registered the cleanup.
	started bool
}

// syncBuffer guards the process's output buffer.
type syncBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// StartProc writes conf to a file and runs the pinned nats-server on it,
// with env added to the environment (for $VAR references in conf). port
// is the client port conf listens on on 127.0.0.1; StartProc returns once
// it accepts TCP connections. The process is stopped when the test ends,
// and its output is logged if the test failed.
func StartProc(t testing.TB, port int, conf string, env ...string) *Proc {
	t.Helper()
	bin := ServerBinary(t)
	p := &Proc{Port: port, Conf: filepath.Join(t.TempDir(), "nats.conf"), log: new(bytes.Buffer), done: make(chan struct{})}
	if err := os.WriteFile(p.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p.start(t, bin, env)
}

// StartProcFile runs the pinned nats-server on an existing configuration
// file (for the example configurations the project ships).
func StartProcFile(t testing.TB, port int, confFile string, env ...string) *Proc {
	t.Helper()
	p := &Proc{Port: port, Conf: confFile, log: new(bytes.Buffer), done: make(chan struct{})}
	return p.start(t, ServerBinary(t), env)
}

// StartProcFileArgs is StartProcFile with command-line flags after the
// configuration file's, for what a shipped file leaves to its runner
// (for example "-sd", the store directory, which a hub embedding the
// file takes from --data-dir instead).
func StartProcFileArgs(t testing.TB, port int, confFile string, args []string, env ...string) *Proc {
	t.Helper()
	p := &Proc{Port: port, Conf: confFile, log: new(bytes.Buffer), done: make(chan struct{}), args: args}
	return p.start(t, ServerBinary(t), env)
}

func (p *Proc) start(t testing.TB, bin string, env []string) *Proc {
	t.Helper()
	p.bin, p.env = bin, env
	p.done = make(chan struct{})
	p.cmd = exec.Command(bin, append([]string{"-c", p.Conf}, p.args...)...)
	p.cmd.Dir = filepath.Dir(p.Conf)
	p.cmd.Env = append(os.Environ(), env...)
	w := syncBuffer{&p.mu, p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := p.done
	go func() { _ = p.cmd.Wait(); close(done) }()
	if !p.started {
		p.started = true
		t.Cleanup(func() {
			p.Stop()
			if t.Failed() {
				t.Logf("nats-server output (%s):\n%s", p.Conf, p.Log())
			}
		})
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("nats-server on %s exited at start:\n%s", p.Conf, p.Log())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server on %s not listening on %s: %v\n%s", p.Conf, addr, err, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts the process again on the same configuration (and so the
// same ports and store) once it has been killed or stopped, and returns
// once it accepts TCP connections.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	p.Stop()
	p.start(t, p.bin, p.env)
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// URL is the client URL (nats://127.0.0.1:port; a TLS configuration still
// answers on it, nats.go upgrades the connection).
func (p *Proc) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(p.Port) }

// Log is what the process has written so far.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop ends the process with SIGTERM (SIGKILL after 10 s) and waits.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}
