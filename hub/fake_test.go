package hub

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
)

// fakeTransport is an in-memory Transport with a bounded queue, standing in
// for a WebSocket connection.
type fakeTransport struct {
	limit int
	sent  atomic.Int64
	sends atomic.Int64 // Send calls that queued something

	mu     sync.Mutex
	frames [][]byte
	code   int
	sess   *Session
}

func (f *fakeTransport) Send(frame []byte) error {
	if f.limit < 0 { // counting only, for benchmarks
		f.sent.Add(int64(bytes.Count(frame, []byte{'\n'}) + 1))
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.code != 0 {
		return ErrClosed
	}
	// A frame may hold several messages, newline-delimited (§1): they are
	// kept one by one, as a client reads them.
	msgs := bytes.Split(frame, []byte{'\n'})
	if len(f.frames)+len(msgs) > f.limit {
		return ErrQueueFull
	}
	f.frames = append(f.frames, msgs...)
	f.sends.Add(1)
	return nil
}

func (f *fakeTransport) Close(code int, _ string) {
	f.mu.Lock()
	first := f.code == 0
	if first {
		f.code = code
	}
	s := f.sess
	f.mu.Unlock()
	if first && s != nil {
		go s.Gone(ReasonClosed)
	}
}

func (f *fakeTransport) closeCode() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.code
}

func (f *fakeTransport) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.frames)
}

func newTestServer(t testing.TB) *Server {
	t.Helper()
	ns := natstest.Run(t)
	return startTestServer(t, natstest.Connect(t, ns), Config{})
}

// startTestServer starts a hub on nc with cfg, filling in what every test
// server has.
func startTestServer(t testing.TB, nc *nats.Conn, cfg Config) *Server {
	t.Helper()
	return startNodeServer(t, nc, "t", cfg)
}

// startNodeServer starts a hub named id on nc, as startTestServer does but
// with its own node id, so that several share one NATS.
func startNodeServer(t testing.TB, nc *nats.Conn, id string, cfg Config) *Server {
	t.Helper()
	srv := newNodeServer(t, nc, id, cfg)
	runServer(t, srv)
	return srv
}

// newNodeServer makes, without starting it, a hub named id on nc with cfg
// and what every test server has, for a test that sets a hook first.
func newNodeServer(t testing.TB, nc *nats.Conn, id string, cfg Config) *Server {
	t.Helper()
	cfg.Conn, cfg.NodeID, cfg.MasterSecret, cfg.BcryptCost, cfg.AdminPassword = nc, id, []byte("0123456789abcdef0123"), 4, "pw"
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// runServer starts srv and shuts it down when the test ends.
func runServer(t testing.TB, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
}

// attach opens a session on a fake transport with identity id, as if it had
// authenticated.
func attach(t testing.TB, srv *Server, limit int, id *Identity) (*Session, *fakeTransport) {
	t.Helper()
	ft := &fakeTransport{limit: limit}
	s := srv.Open(ft, "test")
	ft.mu.Lock()
	ft.sess = s
	ft.mu.Unlock()
	if id.AuthAt.IsZero() {
		id.AuthAt = time.Now()
	}
	if werr := srv.establish(context.Background(), s, id, true); werr != nil {
		t.Fatalf("establish: %v", werr)
	}
	return s, ft
}

func device(sn, typ, group string) *Identity {
	return &Identity{Role: auth.RoleDevice, SN: sn, Type: typ, Group: group}
}

func admin(user string, groups ...string) *Identity {
	return &Identity{Role: auth.RoleAdmin, User: user, Groups: groups}
}
