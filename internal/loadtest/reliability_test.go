//go:build load

// Helpers shared by the soak (soak_test.go) and the chaos test
// (chaos_test.go): devices and admins on the SDK, acknowledged reports
// noted in a Ledger, bounded waits, and the nodes' resource figures.

package loadtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Client settings of the SDK devices and admins.
const (
	sdkMinBackoff     = 100 * time.Millisecond
	sdkMaxBackoff     = time.Second
	sdkRequestTimeout = 10 * time.Second
	sdkDialTimeout    = 10 * time.Second // handshake, then auth
	reportTimeout     = 15 * time.Second // one report, a reconnection included
	errSampleMax      = 10
)

// sdkDialer keeps the socket buffers small: the test holds hundreds of
// clients.
func sdkDialer() *websocket.Dialer {
	return &websocket.Dialer{HandshakeTimeout: sdkDialTimeout, ReadBufferSize: 2048, WriteBufferSize: 2048}
}

// dialDevice connects sn through the SDK to urls[0] (the others are where
// it reconnects, round-robin), authenticated with its key derived from the
// --dev master secret.
func dialDevice(ctx context.Context, sn string, urls []string, onState func(client.State)) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, sdkDialTimeout+5*time.Second)
	defer cancel()
	return client.Dial(ctx, client.Config{
		URL: urls[0], URLs: urls[1:],
		Device:     &client.DeviceAuth{SN: sn, Key: auth.DeviceKey([]byte(DevMasterSecret), sn), Type: DeviceType},
		Dialer:     sdkDialer(),
		MinBackoff: sdkMinBackoff, MaxBackoff: sdkMaxBackoff, RequestTimeout: sdkRequestTimeout,
		OnState: onState,
	})
}

// dialAdmin logs in as --dev's bootstrap admin (admin/admin) on url.
func dialAdmin(ctx context.Context, url string, onPush func(client.Push)) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, sdkDialTimeout+5*time.Second)
	defer cancel()
	return client.Dial(ctx, client.Config{
		URL: url, Login: &client.LoginAuth{Username: "admin", Password: "admin"},
		Dialer:     sdkDialer(),
		MinBackoff: sdkMinBackoff, MaxBackoff: sdkMaxBackoff, RequestTimeout: sdkRequestTimeout,
		OnPush: onPush,
	})
}

// report sends one status report or event of sn carrying a fresh content
// id, and notes it in the ledger when the hub acknowledges it (code 0).
func report(ctx context.Context, c *client.Client, l *Ledger, sn string, k RecordKind) error {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	cid := l.Next(sn, k)
	var err error
	if k == KindEvent {
		err = c.ReportEvent(ctx, "soak", "normal", map[string]any{"cid": cid})
	} else {
		err = c.ReportStatus(ctx, map[string]any{
			"cid": cid, "electricity": map[string]any{"code": 0, "msg": "ok", "percent": len(cid) % 100},
		})
	}
	if err == nil {
		l.Acked(sn, k, cid)
	}
	return err
}

// sessionEnds returns an OnState that calls f for every session that ended
// other than by the client's own Close (close code 1000): a failed attempt
// to connect is not a session.
func sessionEnds(f func(client.State)) func(client.State) {
	connected := false // callbacks of one client run one at a time
	return func(s client.State) {
		switch s.Kind {
		case client.StateConnected:
			connected = true
		case client.StateDisconnected:
			if connected && s.CloseCode != 1000 {
				f(s)
			}
			connected = false
		}
	}
}

// checkRecords reads the streams and checks l against them, for the
// devices whose serials start with prefix; errorf is told what is wrong.
func checkRecords(ctx context.Context, js jetstream.JetStream, l *Ledger, prefix string, errorf func(string, ...any)) (LedgerCheck, error) {
	stored, foreign, err := StoredRecords(ctx, js, func(sn string) bool { return strings.HasPrefix(sn, prefix) })
	if err != nil {
		return LedgerCheck{}, err
	}
	c := l.Check(stored)
	c.Foreign = foreign
	if c.Missing > 0 {
		errorf("%d acknowledged records missing from the streams, e.g. %s", c.Missing, strings.Join(c.MissingSample, ", "))
	}
	if foreign > 0 {
		errorf("%d records of the test's devices without a content id", foreign)
	}
	return c, nil
}

// errCounts counts errors by kind, keeping a few examples.
type errCounts struct {
	mu     sync.Mutex
	n      map[string]int // Guarded by mu.
	sample []string       // Guarded by mu.
}

func (e *errCounts) add(what string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[what+": "+errKind(err)]++
	if len(e.sample) < errSampleMax {
		e.sample = append(e.sample, what+": "+err.Error())
	}
}

func (e *errCounts) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, v := range e.n {
		n += v
	}
	return n
}

func (e *errCounts) snapshot() (map[string]int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.n), slices.Clone(e.sample)
}

// errKind names an error of the SDK briefly: the hub's code, or the SDK's
// reason.
func errKind(err error) string {
	var he *client.Error
	switch {
	case errors.As(err, &he):
		return fmt.Sprintf("code %d", he.Code)
	case errors.Is(err, client.ErrTimeout):
		return "timeout"
	case errors.Is(err, client.ErrDisconnected):
		return "disconnected"
	case errors.Is(err, client.ErrClosed):
		return "closed"
	case errors.Is(err, client.ErrReplaced):
		return "replaced"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// fmtCounts prints counts as "k=v, ..." sorted by key, or "none".
func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	return fmtSorted(m, ", ")
}

// fmtSorted prints m as "k=v" pairs sorted by key, joined by sep.
func fmtSorted[V int | float64](m map[string]V, sep string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, sep)
}

// awaitCond polls f every every until it returns nil, timeout passes or
// ctx ends; then it returns f's last error.
func awaitCond(ctx context.Context, timeout, every time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := poll(ctx, every, f); err != nil {
		return fmt.Errorf("not within %v: %w", timeout, err)
	}
	return nil
}

// testContext is the context of a load test: it ends after budget, or
// deadlineMargin before go test's -timeout, whichever comes first.
func testContext(t *testing.T, budget time.Duration) (context.Context, context.CancelFunc) {
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-deadlineMargin)
	}
	return context.WithTimeout(context.Background(), budget)
}

// rig is what the soak and the chaos test run on: a nats-server process,
// the hub binary, and the test's own connection to the server with a
// watcher of every presence record published.
type rig struct {
	ns     *NATS
	hubBin string
	nc     *nats.Conn
	recs   *presenceRecords
}

// startRig builds nats-server and the hub into a temporary directory,
// starts the server on a port it can be restarted on, and connects to it
// as name. Everything stops when the test ends.
func startRig(ctx context.Context, t *testing.T, name string) (*rig, error) {
	dir := t.TempDir()
	natsBin, err := BuildNATSServer(dir)
	if err != nil {
		return nil, err
	}
	r := &rig{}
	if r.hubBin, err = BuildHub(dir); err != nil {
		return nil, err
	}
	if r.ns, err = StartNATS(ctx, natsBin, natstest.RestartablePort(t)); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = r.ns.Stop() })
	r.nc, err = nats.Connect(r.ns.URL, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect to nats-server: %w", err)
	}
	t.Cleanup(r.nc.Close)
	if r.recs, err = watchPresenceRecords(r.nc); err != nil {
		return nil, fmt.Errorf("subscribe hub.presence.*: %w", err)
	}
	return r, nil
}

// startNodes starts the hub binary once per id, on natsURL; each stops
// when the test ends.
func startNodes(ctx context.Context, t *testing.T, bin, natsURL string, ids []string, args ...string) ([]*Hub, error) {
	var nodes []*Hub
	for _, id := range ids {
		h, err := StartHub(ctx, bin, append([]string{"--nats-url", natsURL, "--node-id", id}, args...)...)
		if err != nil {
			return nodes, fmt.Errorf("start %s: %w", id, err)
		}
		t.Cleanup(func() { _ = h.Stop() })
		nodes = append(nodes, h)
	}
	return nodes, nil
}

// sessions is the number of sessions (every role) a node holds.
func sessions(ctx context.Context, h *Hub) (float64, error) {
	m, err := h.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return m.Sum("fleethub_sessions"), nil
}

// Resources are a node's figures at one moment.
type Resources struct {
	Goroutines int     `json:"goroutines"`
	FDs        int     `json:"fds"`
	HeapMiB    float64 `json:"heap_inuse_mib"`
}

// resources samples a node: go_goroutines and go_memstats_heap_inuse_bytes
// from /metrics, open files from /proc/<pid>/fd. With gc, a collection is
// forced first (the node must run with --pprof): the heap is then what is
// live, not what the collector has yet to reclaim.
func resources(ctx context.Context, h *Hub, gc bool) (Resources, error) {
	if gc {
		if _, err := h.get(ctx, "/debug/pprof/heap?gc=1"); err != nil {
			return Resources{}, err
		}
	}
	m, err := h.Metrics(ctx)
	if err != nil {
		return Resources{}, err
	}
	fds, err := openFiles(h.PID)
	if err != nil {
		return Resources{}, err
	}
	return Resources{
		Goroutines: int(m["go_goroutines"]), FDs: fds,
		HeapMiB: m["go_memstats_heap_inuse_bytes"] / (1 << 20),
	}, nil
}

// openFiles counts the entries of /proc/<pid>/fd.
func openFiles(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	return envValue(t, name, def, time.ParseDuration)
}
