package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// clusterConf is the shipped configuration of one-binary cluster node n.
func clusterConf(n int) string {
	return filepath.Join("..", "..", "docs", "cluster", fmt.Sprintf("hub-%d.conf", n))
}

// TestClusterConfsParse keeps docs/cluster/hub-N.conf valid and
// consistent: three servers of the cluster "fleethub" on loopback, routes
// that authenticate, every one a route of the others, and no refusal by
// CheckExposure outside --dev.
func TestClusterConfsParse(t *testing.T) {
	routePorts := map[int]bool{}
	for n := 1; n <= 3; n++ {
		opts, err := server.ProcessConfigFile(clusterConf(n))
		if err != nil {
			t.Fatalf("hub-%d.conf: %v", n, err)
		}
		if want := fmt.Sprintf("hub-%d", n); opts.ServerName != want {
			t.Errorf("hub-%d.conf: server_name %q, want %q", n, opts.ServerName, want)
		}
		if opts.Host != "127.0.0.1" || opts.Port != 4222+n || opts.StoreDir != "" {
			t.Errorf("hub-%d.conf: listen %s:%d, store_dir %q; want 127.0.0.1:%d and no store_dir (--data-dir decides)", n, opts.Host, opts.Port, opts.StoreDir, 4222+n)
		}
		c := opts.Cluster
		if c.Name != "fleethub" || c.Host != "127.0.0.1" || c.Port != 6222+n || c.Username == "" || c.Password == "" {
			t.Errorf("hub-%d.conf: cluster %q on %s:%d, user %q: want fleethub on 127.0.0.1:%d with a user and password", n, c.Name, c.Host, c.Port, c.Username, 6222+n)
		}
		routePorts[c.Port] = true
		if len(opts.Routes) != 3 {
			t.Fatalf("hub-%d.conf: %d routes, want 3", n, len(opts.Routes))
		}
		for _, r := range opts.Routes {
			pass, _ := r.User.Password()
			if r.User == nil || r.User.Username() != c.Username || pass != c.Password || r.Hostname() != "127.0.0.1" {
				t.Errorf("hub-%d.conf: route %s does not carry the cluster's credentials or is off loopback", n, r.Redacted())
			}
		}
		if err := CheckExposure(opts, FlagConf); err != nil {
			t.Errorf("hub-%d.conf refused: %v", n, err)
		}
	}
	for n := 1; n <= 3; n++ {
		if !routePorts[6222+n] {
			t.Errorf("no node listens for routes on %d", 6222+n)
		}
	}
}

// TestStartClusteredAlone starts the embedded server of a cluster node
// whose peers are not there: Start must return at once (the node then
// waits for JetStream), and JetStreamReady must say no quorum.
func TestStartClusteredAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := &server.Options{
		ServerName: "alone-1", Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "js"),
		NoSigs:  true,
		Cluster: server.ClusterOpts{Name: "c", Host: "127.0.0.1", Port: -1},
	}
	// Two peers that never come: their route ports are closed.
	opts.Routes = server.RoutesFromStr("nats-route://127.0.0.1:1,nats-route://127.0.0.1:2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	ns, err := start(ctx, Config{}, opts, FlagConf)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("start took %s: it waited for the cluster", took)
	}
	if err := ns.JetStreamReady(); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("JetStreamReady alone = %v, want ErrNoQuorum", err)
	}
}

// TestJetStreamReadyLoneLeader kills (shuts down) two servers of a
// three-server cluster and watches the survivor that leads the meta
// group: it keeps leading for 10 to 20 s before Raft makes it step down,
// but JetStreamReady must say no quorum well before (peerSilence), so that
// /readyz answers 503 within 15 s of the loss.
func TestJetStreamReadyLoneLeader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	routePorts := make([]int, 3)
	for i := range routePorts {
		routePorts[i] = freePort(t)
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers := make([]*Server, 3)
	errs := make(chan error, 3)
	for i := range servers {
		go func() {
			opts := &server.Options{
				ServerName: fmt.Sprintf("s-%d", i+1), Host: "127.0.0.1", Port: -1, JetStream: true,
				StoreDir: filepath.Join(dir, fmt.Sprint(i)), NoSigs: true,
				Cluster: server.ClusterOpts{Name: "c", Host: "127.0.0.1", Port: routePorts[i]},
				Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			}
			ns, err := start(ctx, Config{}, opts, FlagConf)
			servers[i] = ns
			errs <- err
		}()
	}
	for range servers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	var leader *Server
	waitFor(t, 30*time.Second, func() error {
		leader = nil
		for _, s := range servers {
			if err := s.JetStreamReady(); err != nil {
				return fmt.Errorf("%s: %w", s.Name(), err)
			}
			if s.JetStreamIsLeader() {
				leader = s
			}
		}
		if leader == nil {
			return errors.New("no meta leader")
		}
		return nil
	})
	for _, s := range servers {
		if s != leader {
			s.Shutdown()
		}
	}
	lost := time.Now()
	waitFor(t, 9*time.Second, func() error {
		if err := leader.JetStreamReady(); err == nil {
			return fmt.Errorf("%s, alone, still ready after %s", leader.Name(), time.Since(lost).Round(time.Millisecond))
		} else if !errors.Is(err, ErrNoQuorum) {
			t.Fatalf("JetStreamReady = %v, want ErrNoQuorum", err)
		}
		return nil
	})
	t.Logf("lone meta leader not ready %s after losing its peers (still leader: %v)", time.Since(lost).Round(time.Millisecond), leader.JetStreamIsLeader())
}

// waitFor polls f every 50 ms until it returns nil, failing the test with
// f's last error after d.
func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort is a loopback port free at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
