// Package natstest starts real nats-servers for tests: in-process, on a
// free port, with JetStream in a temporary directory.
package natstest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Run starts a nats-server with JetStream and shuts it down when the test
// ends.
func Run(t testing.TB) *server.Server {
	t.Helper()
	return RunAt(t, -1, t.TempDir())
}

// RunAt starts a nats-server with JetStream on port (-1: any free one),
// keeping its data in storeDir.
func RunAt(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
		NoLog: true, NoSigs: true,
	}
	if port > 0 {
		// A server restarted on its port (see RestartablePort) cannot
		// listen while anything still holds it: wait until it is free.
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(port))
		Eventually(t, 20*time.Second, func() error {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			return l.Close()
		})
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		listening := ns.Addr() != nil
		ns.Shutdown()
		t.Fatalf("nats server on port %d not ready (listening: %v)", port, listening)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// RestartablePort returns a free loopback port below the kernel's
// ephemeral range, for a server that a test stops and starts again on the
// same port. Meanwhile no outgoing connection can take it as its local
// port, no server bound to port 0 can be given it, and a client redialling
// it cannot connect to itself (which on loopback a dial from an ephemeral
// port equal to the target does).
func RestartablePort(t testing.TB) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	from := min(20000, low/2)
	for range 100 {
		p := from + rand.IntN(low-from)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p
	}
	t.Fatalf("no free port in [%d, %d)", from, low)
	return 0
}

// Connect opens a client connection to ns over TCP, closed when the test
// ends.
func Connect(t testing.TB, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Eventually polls f until it returns nil or timeout passes, then fails
// the test with f's last error. Use it instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
