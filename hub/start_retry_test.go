package hub

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// A Start that failed can run again on the same Server and succeed, as the
// node's start-up does while it waits for JetStream: the second Start
// opens every store anew, takes tasks, and the node is ready.
func TestStartAgainAfterFailure(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A stream that takes the status subjects: HUB_STATUS cannot be made,
	// one of the last steps of Start.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"hub.dev.*.status"}}); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Conn: nc, NodeID: "t", MasterSecret: []byte("0123456789abcdef0123"), BcryptCost: 4, AdminPassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err == nil || !strings.Contains(err.Error(), StreamStatus) {
		t.Fatalf("first Start = %v, want an error about %s", err, StreamStatus)
	}
	if h := srv.Health(); h.Ready() || h.Serving {
		t.Fatalf("health after a failed Start: %+v", h)
	}
	if _, _, err := srv.Login(ctx, "127.0.0.1:1", "admin", "pw"); err == nil {
		t.Fatal("login accepted before the hub started")
	}
	if err := js.DeleteStream(ctx, "SQUATTER"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if h := srv.Health(); !h.Ready() {
		t.Fatalf("health after the second Start: %+v", h)
	}
	if len(srv.stores.all()) != len(uniqueStores(srv)) {
		t.Fatalf("stores listed twice: %v", uniqueStores(srv))
	}
	if _, _, err := srv.Login(ctx, "127.0.0.1:1", "admin", "pw"); err != nil {
		t.Fatalf("login after the second Start: %v", err)
	}
	ran := make(chan struct{})
	if !srv.goTask(func() { close(ran) }) {
		t.Fatal("the started hub takes no task")
	}
	<-ran
	if err := srv.Start(ctx); err == nil {
		t.Fatal("Start of a started hub succeeded")
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != ErrStopped {
		t.Fatalf("Start after Shutdown = %v, want ErrStopped", err)
	}
}

func uniqueStores(srv *Server) map[string]bool {
	m := map[string]bool{}
	for _, st := range srv.stores.all() {
		m[st.name] = true
	}
	return m
}
