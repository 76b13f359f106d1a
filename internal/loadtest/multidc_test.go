package loadtest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// silentWANLimit bounds how long a request to the other data centre may
// time out after the WAN went silent before the servers see the link
// gone and it answers no responders (503 at the hub): ping_interval 1 s
// times ping_max 3 in the shipped files, and a second for the request
// under way.
const silentWANLimit = 6 * time.Second

// TestShippedDCConfigs runs the shipped configurations of two data
// centres as they are: each server answers with the data centre a hub
// node would take from it (the leaf topology's JetStream domains; the
// supercluster's cluster names), and a silent WAN is seen in seconds (a
// request across answers no responders instead of timing out), then
// carries requests again after it heals.
func TestShippedDCConfigs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server processes; skipped in -short")
	}
	for _, top := range []Topology{TopologyLeaf, TopologySupercluster} {
		t.Run(string(top), func(t *testing.T) {
			s := StartDCServers(t, top, 40*time.Millisecond)
			for i, name := range DCNames {
				nc, err := nats.Connect(s.Servers[i].URL())
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				var domain string
				natstest.Eventually(t, 30*time.Second, func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					ai, err := js.AccountInfo(ctx)
					if err == nil {
						domain = ai.Domain
					}
					return err
				})
				// A node's data centre: the cluster name, else the domain.
				// On the leaf topology east has no cluster and west reports
				// its server name (a server with leaf remotes and no
				// cluster does): both must be the data centre's name.
				cluster := nc.ConnectedClusterName()
				dc := cluster
				if dc == "" {
					dc = domain
				}
				wantDomain := name
				if top == TopologySupercluster {
					wantDomain = ""
				}
				if dc != name || domain != wantDomain {
					t.Errorf("%s: cluster %q, JetStream domain %q: a node would take data centre %q, want %q (domain %q)", name, cluster, domain, dc, name, wantDomain)
				}
			}
			sub, err := nats.Connect(s.Servers[1].URL())
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			subject := "partition.silent." + nuid.Next()
			if _, err := sub.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
				t.Fatal(err)
			}
			if err := sub.Flush(); err != nil {
				t.Fatal(err)
			}
			pub, err := nats.Connect(s.Servers[0].URL())
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			natstest.Eventually(t, 30*time.Second, func() error {
				_, err := pub.Request(subject, nil, time.Second)
				return err
			})
			silent := time.Now()
			s.Blackhole()
			timeouts := 0
			for {
				_, err := pub.Request(subject, nil, 500*time.Millisecond)
				if errors.Is(err, nats.ErrNoResponders) {
					break
				}
				if err != nil {
					timeouts++
				}
				if time.Since(silent) > 3*silentWANLimit {
					break
				}
			}
			seen := time.Since(silent)
			t.Logf("%s: a silent WAN answered no responders after %v (%d requests timed out before)", top, seen.Round(time.Millisecond), timeouts)
			if seen > silentWANLimit {
				t.Errorf("a silent WAN was seen after %v, want at most %v (ping_interval, ping_max)", seen.Round(time.Millisecond), silentWANLimit)
			}
			s.Heal()
			natstest.Eventually(t, 30*time.Second, func() error {
				_, err := pub.Request(subject, nil, time.Second)
				return err
			})
		})
	}
}

// TestShippedLeafNeedsPassword: east's leaf listener takes no server
// that does not present the leaf password.
func TestShippedLeafNeedsPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server processes; skipped in -short")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	eastPort, leafPort, westPort := natstest.FreePort(t), natstest.FreePort(t), natstest.FreePort(t)
	east := natstest.StartProcFileArgs(t, eastPort, root+"/docs/multidc/east.conf", []string{"-sd", t.TempDir()},
		"FLEETHUB_EAST_PORT="+strconv.Itoa(eastPort), "FLEETHUB_EAST_LEAF_PORT="+strconv.Itoa(leafPort), "FLEETHUB_LEAF_PASSWORD=right-"+nuid.Next())
	west := natstest.StartProcFileArgs(t, westPort, root+"/docs/multidc/west.conf", []string{"-sd", t.TempDir()},
		"FLEETHUB_WEST_PORT="+strconv.Itoa(westPort), "FLEETHUB_WEST_LEAF_REMOTE=nats-leaf://leaf:wrong@127.0.0.1:"+strconv.Itoa(leafPort))
	natstest.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(west.Log(), "Authorization Violation") {
			return errors.New("east has not refused west's leaf connection yet")
		}
		return nil
	})
	// A link that formed would have exchanged JetStream domains.
	for _, p := range []*natstest.Proc{east, west} {
		if strings.Contains(p.Log(), "JetStream using domains") {
			t.Fatalf("west joined east's leaf listener with a wrong password:\n%s", p.Log())
		}
	}
}
