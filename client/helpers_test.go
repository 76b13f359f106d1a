package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/client"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// waitFor is how long a test waits for something that should happen.
const waitFor = 10 * time.Second

// recorder keeps what a client's callbacks saw.
type recorder struct {
	mu        sync.Mutex
	pushes    []client.Push
	snapshots []json.RawMessage
	states    []client.State
}

// hook sets cfg's callbacks to record into r.
func (r *recorder) hook(cfg *client.Config) {
	cfg.OnPush = func(p client.Push) {
		r.mu.Lock()
		r.pushes = append(r.pushes, p)
		r.mu.Unlock()
	}
	cfg.OnSnapshot = func(v json.RawMessage) {
		r.mu.Lock()
		r.snapshots = append(r.snapshots, v)
		r.mu.Unlock()
	}
	cfg.OnState = func(s client.State) {
		r.mu.Lock()
		r.states = append(r.states, s)
		r.mu.Unlock()
	}
}

// waitPush waits for a push of service whose values contain part.
func (r *recorder) waitPush(t *testing.T, service, part string) client.Push {
	t.Helper()
	var got client.Push
	natstest.Eventually(t, waitFor, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.pushes {
			if p.Service == service && bytes.Contains(p.Values, []byte(part)) {
				got = p
				return nil
			}
		}
		return fmt.Errorf("no %s push with %s among %d pushes", service, part, len(r.pushes))
	})
	return got
}

// snapshotCount is how many snapshots were delivered.
func (r *recorder) snapshotCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.snapshots)
}

// stateKinds lists the kinds of the states seen so far.
func (r *recorder) stateKinds() []client.StateKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]client.StateKind, len(r.states))
	for i, s := range r.states {
		out[i] = s.Kind
	}
	return out
}

// lastState is the last state seen, of the kind.
func (r *recorder) lastState(kind client.StateKind) (client.State, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.states) - 1; i >= 0; i-- {
		if r.states[i].Kind == kind {
			return r.states[i], true
		}
	}
	return client.State{}, false
}

// waitState waits for a state of the kind after the first n states.
func (r *recorder) waitState(t *testing.T, n int, kind client.StateKind) client.State {
	t.Helper()
	var got client.State
	natstest.Eventually(t, waitFor, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.states[min(n, len(r.states)):] {
			if s.Kind == kind {
				got = s
				return nil
			}
		}
		return fmt.Errorf("no %v state after the first %d of %d", kind, n, len(r.states))
	})
	return got
}

// sawInOrder reports whether kinds occur in the states seen, in order (not
// necessarily next to each other).
func (r *recorder) sawInOrder(kinds ...client.StateKind) bool {
	i := 0
	for _, k := range r.stateKinds() {
		if i < len(kinds) && k == kinds[i] {
			i++
		}
	}
	return i == len(kinds)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial dials and closes the client when the test ends.
func dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// deviceConfig is the config of device sn on the test nodes' secret.
func deviceConfig(sn string, urls ...string) client.Config {
	return client.Config{
		URLs:   urls,
		Device: &client.DeviceAuth{SN: sn, Key: auth.DeviceKey(hubtest.MasterSecret, sn), Type: "retail"},
	}
}

// adminConfig is the config of the bootstrap admin of the test nodes.
func adminConfig(urls ...string) client.Config {
	return client.Config{URLs: urls, Login: &client.LoginAuth{Username: "admin", Password: hubtest.AdminPassword}}
}

// clientGoroutines counts the goroutines running code of package client,
// or started by it.
func clientGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	var found []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/fleethub/fleethub/client.") {
			count++
			found = append(found, g)
		}
	}
	return count, strings.Join(found, "\n\n")
}

// noClientGoroutines fails the test unless every goroutine of package
// client is soon gone. Soon, not at once: a goroutine that has signalled
// its WaitGroup still has to return.
func noClientGoroutines(t *testing.T) {
	t.Helper()
	natstest.Eventually(t, waitFor, func() error {
		if n, stacks := clientGoroutines(); n != 0 {
			return fmt.Errorf("%d goroutines of package client left:\n%s", n, stacks)
		}
		return nil
	})
}

// deadURL is the WebSocket URL of a server that is gone.
func deadURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}
