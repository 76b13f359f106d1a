package embedded

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
		NoSigs: true,
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
