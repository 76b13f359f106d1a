package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// The one-binary cluster as docs/cluster ships it: three hub processes,
// each embedding one of the three NATS servers of the cluster "fleethub"
// (docs/cluster/hub-N.conf), with the hub's state at --replicas 3.

// ClusterSize is the number of nodes of docs/cluster.
const ClusterSize = 3

// ClusterNATSURL is the client URL of node n's embedded server (1-based),
// as docs/cluster/hub-n.conf sets it.
func ClusterNATSURL(n int) string { return "nats://127.0.0.1:" + strconv.Itoa(4222+n) }

// clusterPorts are every port docs/cluster's servers listen on: clients
// 4223-4225, routes 6223-6225.
func clusterPorts() []int {
	var p []int
	for n := 1; n <= ClusterSize; n++ {
		p = append(p, 4222+n, 6222+n)
	}
	return p
}

// ClusterConf is the path of docs/cluster/hub-n.conf in this module.
func ClusterConf(n int) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "docs", "cluster", fmt.Sprintf("hub-%d.conf", n)), nil
}

// ClusterNode is one node of an EmbeddedCluster: its command line stays
// the same across restarts, and so do its name and JetStream store.
type ClusterNode struct {
	N       int    // 1, 2 or 3
	DataDir string // the JetStream store, kept across restarts
	Hub     *Hub   // the running process; nil while stopped
	args    []string
}

// EmbeddedCluster is the one-binary cluster of docs/cluster run as three
// hub processes.
type EmbeddedCluster struct {
	Nodes []*ClusterNode
	bin   string
}

// StartEmbeddedCluster starts the three nodes of docs/cluster at the same
// moment from the hub binary at bin, each with --nats-conf
// docs/cluster/hub-N.conf, --replicas 3, --node-id hub-N and its store
// under dataRoot/hub-N, plus extra, and returns once each answers
// /healthz (StartHub); readiness is the caller's to await. It fails at
// once, naming the port, when a port of docs/cluster is taken (make
// cluster running, for example). Stop the cluster with Stop.
func StartEmbeddedCluster(ctx context.Context, bin, dataRoot string, extra ...string) (*EmbeddedCluster, error) {
	for _, p := range clusterPorts() {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return nil, fmt.Errorf("loadtest: port %d of docs/cluster is taken (is make cluster running?): %w", p, err)
		}
		_ = l.Close()
	}
	c := &EmbeddedCluster{bin: bin}
	for n := 1; n <= ClusterSize; n++ {
		conf, err := ClusterConf(n)
		if err != nil {
			return nil, err
		}
		node := &ClusterNode{N: n, DataDir: filepath.Join(dataRoot, fmt.Sprintf("hub-%d", n))}
		node.args = append([]string{"--nats-conf", conf, "--replicas", "3",
			"--node-id", fmt.Sprintf("hub-%d", n), "--data-dir", node.DataDir}, extra...)
		c.Nodes = append(c.Nodes, node)
	}
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, node := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Start(ctx, node.N)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Node is node n (1-based).
func (c *EmbeddedCluster) Node(n int) *ClusterNode { return c.Nodes[n-1] }

// Start starts node n, which must be stopped or killed, on its command
// line and store, and returns once it answers /healthz (at most 30 s).
func (c *EmbeddedCluster) Start(ctx context.Context, n int) error {
	node := c.Node(n)
	if node.Hub != nil {
		if exited, _ := node.Hub.Exited(); !exited {
			return fmt.Errorf("loadtest: cluster node %d is running", n)
		}
		_ = node.Hub.Stop()
	}
	h, err := StartHub(ctx, c.bin, node.args...)
	if err != nil {
		node.Hub = nil
		return fmt.Errorf("loadtest: cluster node %d: %w", n, err)
	}
	node.Hub = h
	return nil
}

// Kill ends node n with SIGKILL, as a crash would; its store stays.
func (c *EmbeddedCluster) Kill(n int) {
	if h := c.Node(n).Hub; h != nil {
		h.Kill()
	}
}

// Stop stops every node (SIGTERM, then SIGKILL after 10 s), all at once.
func (c *EmbeddedCluster) Stop() {
	var wg sync.WaitGroup
	for _, node := range c.Nodes {
		if node.Hub == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = node.Hub.Stop()
		}()
	}
	wg.Wait()
}

// Readiness is what GET /readyz answered.
type Readiness struct {
	Code    int      // 200 ready, 503 not
	Missing []string `json:"missing"` // what keeps the node from being ready
}

// ReadyState fetches /readyz.
func (h *Hub) ReadyState(ctx context.Context) (Readiness, error) {
	code, body, err := h.Probe(ctx, "/readyz")
	if err != nil {
		return Readiness{}, err
	}
	if body == nil {
		return Readiness{}, fmt.Errorf("loadtest: GET /readyz: %d without a JSON body", code)
	}
	r := Readiness{Code: code}
	if m, ok := body["missing"].([]any); ok {
		for _, v := range m {
			if s, ok := v.(string); ok {
				r.Missing = append(r.Missing, s)
			}
		}
	}
	return r, nil
}

// WaitReadiness polls /readyz until its answer is ready (200) or, with
// ready false, 503; it returns the time that took, or an error when the
// process exits or ctx ends first.
func (h *Hub) WaitReadiness(ctx context.Context, ready bool) (time.Duration, error) {
	begin := time.Now()
	want := http.StatusOK
	if !ready {
		want = http.StatusServiceUnavailable
	}
	err := poll(ctx, 50*time.Millisecond, func() error {
		if exited, werr := h.Exited(); exited {
			return fmt.Errorf("%w: %v", errExited, werr)
		}
		r, err := h.ReadyState(ctx)
		if err != nil {
			return err
		}
		if r.Code != want {
			return fmt.Errorf("/readyz answered %d (missing %v), want %d", r.Code, r.Missing, want)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("loadtest: %s: %w", h.HTTPURL, err)
	}
	return time.Since(begin), nil
}
