package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsReadyTimeout bounds how long Start waits for a nats-server to listen
// and answer JetStream requests; a restart recovers the store first.
const natsReadyTimeout = 30 * time.Second

// BuildNATSServer builds the nats-server of the version go.mod pins (`go
// build github.com/nats-io/nats-server/v2`) into dir and returns the
// binary's path.
func BuildNATSServer(dir string) (string, error) {
	return goBuild(dir, "nats-server", "github.com/nats-io/nats-server/v2")
}

// NATS is a nats-server child process with JetStream on a fixed loopback
// port, its file store in a directory of its own, so that it can be killed
// and started again where its clients expect it, with what it had stored.
type NATS struct {
	URL      string // nats://127.0.0.1:port
	Port     int
	StoreDir string

	path, dir string

	mu   sync.Mutex
	proc *child // the running process (or the last one). Guarded by mu.
}

// StartNATS starts the nats-server binary at path on 127.0.0.1:port, with
// JetStream in a fresh temporary directory, and returns once it answers
// JetStream requests. Pick port with natstest.RestartablePort when the
// server will be restarted, so that nothing else takes it meanwhile.
func StartNATS(ctx context.Context, path string, port int) (*NATS, error) {
	dir, err := os.MkdirTemp("", "fleethub-nats-")
	if err != nil {
		return nil, err
	}
	n := &NATS{
		URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port, StoreDir: filepath.Join(dir, "jetstream"),
		path: path, dir: dir,
	}
	if err := n.Start(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return n, nil
}

// Start starts the server again, on the same port and store, once the last
// process has exited (after Kill). It waits for the port to be free, then
// for the server to answer JetStream requests, at most 30 s.
func (n *NATS) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		if exited, _ := n.proc.Exited(); !exited {
			return errors.New("loadtest: nats-server is still running")
		}
		_ = n.proc.logFile.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, natsReadyTimeout)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port))
	if err := waitPortFree(ctx, addr); err != nil {
		return err
	}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.Port), "-js", "-sd", n.StoreDir, "-n", "loadtest"}
	p, err := startChild(n.path, args, n.dir, filepath.Join(n.dir, "nats.log"))
	if err != nil {
		return err
	}
	n.proc = p
	if err := waitJetStream(ctx, n.URL, p); err != nil {
		p.Kill()
		return fmt.Errorf("%w\nnats-server log tail:\n%s", err, p.LogTail(2048))
	}
	return nil
}

// PID is the running (or last) process's id.
func (n *NATS) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc.PID
}

// Kill ends the server with SIGKILL, as a crash would, and returns once it
// has exited.
func (n *NATS) Kill() {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	p.Kill()
}

// Stop ends the server (SIGTERM, SIGKILL after 10 s) and removes its
// directory. It returns the exit error of the last process.
func (n *NATS) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.proc.terminate(stopGrace)
	_ = os.RemoveAll(n.dir)
	return err
}

// LogTail returns up to the last max bytes of the server's output, every
// run of it.
func (n *NATS) LogTail(max int64) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc.LogTail(max)
}

// waitPortFree polls until addr can be listened on, or ctx ends.
func waitPortFree(ctx context.Context, addr string) error {
	err := poll(ctx, 20*time.Millisecond, func() error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		return l.Close()
	})
	if err != nil {
		return fmt.Errorf("loadtest: %s still taken: %w", addr, err)
	}
	return nil
}

// waitJetStream polls until the server at url answers a JetStream account
// request, the process p exits, or ctx ends.
func waitJetStream(ctx context.Context, url string, p *child) error {
	err := poll(ctx, 50*time.Millisecond, func() error {
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("%w: %v", errExited, werr)
		}
		return pingJetStream(ctx, url)
	})
	if err != nil {
		return fmt.Errorf("loadtest: nats-server not ready: %w", err)
	}
	return nil
}

func pingJetStream(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = js.AccountInfo(actx)
	return err
}
