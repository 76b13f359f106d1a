package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func refusedControl(srv *Server, reason string) float64 {
	return testutil.ToFloat64(srv.ctl.refused.WithLabelValues(reason))
}

// A takeover announcement that a node did not sign closes nobody and is
// counted; a signed one, after it on the same subject, still works.
func TestTakeoverUnsignedRefused(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{})
	pub := natstest.Connect(t, ns) // anyone on the bus
	for _, tc := range []struct {
		name, reason string
		sign         func(m *nats.Msg)
	}{
		{"no signature", ctlUnsigned, func(*nats.Msg) {}},
		{"signature of another body", ctlBadSig, func(m *nats.Msg) {
			other := srv.ctl.message(subjects.Takeover, []byte(`{"sn":"other"}`))
			m.Header = other.Header
		}},
		{"signature for another subject", ctlBadSig, func(m *nats.Msg) {
			srv.ctl.sign(m, subjects.DirList)
		}},
		{"signed by another master secret", ctlBadSig, func(m *nats.Msg) {
			newControl([]byte("another-master-secret-0123"), nil).sign(m, subjects.Takeover)
		}},
		{"signed a minute ago", ctlStale, func(m *nats.Msg) {
			at := time.Now().Add(-time.Minute).UnixMilli()
			m.Header = nats.Header{}
			m.Header.Set(schema.HeaderSigAt, strconv.FormatInt(at, 10))
			m.Header.Set(schema.HeaderSig, auth.SignControl(srv.ctl.key, subjects.Takeover, at, m.Data))
		}},
		{"signing time not a number", ctlBadSig, func(m *nats.Msg) {
			srv.ctl.sign(m, subjects.Takeover)
			m.Header.Set(schema.HeaderSigAt, "soon")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victim, vt := attach(t, srv, 100, device("V-"+strconv.Itoa(int(time.Now().UnixNano())), "robot", "g"))
			witness, wt := attach(t, srv, 100, device("W-"+strconv.Itoa(int(time.Now().UnixNano())), "robot", "g"))
			before := refusedControl(srv, tc.reason)
			forged, _ := json.Marshal(takeover{SN: victim.Identity().SN, Session: "zzzz", Node: "evil", AtNS: 1 << 62})
			m := &nats.Msg{Subject: subjects.Takeover, Data: forged, Header: nats.Header{}}
			tc.sign(m)
			if err := pub.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			// The node's own announcement, after the forged one on the same
			// subscription: once it has closed the witness, the forged one
			// has been dealt with.
			real, _ := json.Marshal(takeover{SN: witness.Identity().SN, Session: "zzzz", Node: "other", AtNS: 1 << 62})
			if err := pub.PublishMsg(srv.ctl.message(subjects.Takeover, real)); err != nil {
				t.Fatal(err)
			}
			natstest.Eventually(t, 5*time.Second, func() error {
				if wt.closeCode() == 0 {
					return errors.New("witness not replaced by the signed announcement")
				}
				return nil
			})
			if code := vt.closeCode(); code != 0 {
				t.Fatalf("forged announcement closed the victim with %d", code)
			}
			if got := refusedControl(srv, tc.reason); got != before+1 {
				t.Fatalf("control_refused_total{reason=%q} = %v, want %v", tc.reason, got, before+1)
			}
		})
	}
}

// holdLease makes the device directory a node that does not exist, so
// that no test node answers hub.ctl.dir.* and the test's own responder
// does.
func holdLease(t *testing.T, nc *nats.Conn, ttl time.Duration) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: schema.BucketRoles, Description: "leases of the hub's roles (the device directory)",
		History: 1, TTL: ttl, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, dirLeaseKey, []byte("ghost")); err != nil {
		t.Fatal(err)
	}
}

// A directory reply that no node signed is not believed: the listing
// fails (503) rather than show what the forger made up, and the refusal
// is counted; the same reply signed by a node is taken.
func TestDirectoryForgedReplyRefused(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	const ttl = 30 * time.Second // the ghost holds the lease for the test
	holdLease(t, nc, ttl)
	srv := startTestServer(t, nc, Config{NodeTTL: ttl})
	forger := natstest.Connect(t, ns)
	page, _ := json.Marshal(dirReply{D: []dirEntry{{SN: "FORGED-1", Type: "robot", Group: "g", Online: true, Node: "evil"}}})
	var signed atomic.Bool
	sub, err := forger.Subscribe(subjects.AllDir, func(m *nats.Msg) {
		if signed.Load() {
			_ = forger.PublishMsg(srv.ctl.reply(m, page))
			return
		}
		_ = m.Respond(page)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := forger.Flush(); err != nil {
		t.Fatal(err)
	}
	req := &dirListRequest{Groups: []string{"*"}, Limit: 10}
	before := refusedControl(srv, ctlUnsigned)
	if r, werr := srv.askDirectory(context.Background(), subjects.DirList, req); werr == nil {
		t.Fatalf("forged directory reply taken: %+v", r)
	}
	if got := refusedControl(srv, ctlUnsigned); got < before+1 {
		t.Fatalf("control_refused_total{reason=unsigned} = %v, want more than %v", got, before)
	}
	if v := testutil.ToFloat64(srv.dir.unavailable.WithLabelValues(dirBadAnswer)); v != 1 {
		t.Fatalf("directory_unavailable_total{reason=bad_answer} = %v, want 1", v)
	}

	signed.Store(true)
	r, werr := srv.askDirectory(context.Background(), subjects.DirList, req)
	if werr != nil || len(r.D) != 1 || r.D[0].SN != "FORGED-1" {
		t.Fatalf("signed reply: %+v %v", r, werr)
	}
}

// The directory answers only requests a node signed: listings cross group
// boundaries, so a client of the bus must not get them.
func TestDirectoryUnsignedRequestRefused(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{})
	natstest.Eventually(t, 10*time.Second, func() error {
		if testutil.ToFloat64(srv.dir.held) != 1 {
			return errors.New("not the directory yet")
		}
		_, werr := srv.askDirectory(context.Background(), subjects.DirList, &dirListRequest{Groups: []string{"*"}, Limit: 10})
		if werr != nil {
			return werr
		}
		return nil
	})
	client := natstest.Connect(t, ns)
	body, _ := json.Marshal(dirListRequest{Groups: []string{"*"}, Limit: 10})
	before := refusedControl(srv, ctlUnsigned)
	if m, err := client.Request(subjects.DirList, body, 500*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("unsigned directory request answered: %v %v", m, err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if got := refusedControl(srv, ctlUnsigned); got != before+1 {
			return fmt.Errorf("control_refused_total{reason=unsigned} = %v, want %v", got, before+1)
		}
		return nil
	})
}
