package hub

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A device that comes back within its grace on another node, which knows
// nothing of it but what it reads, gets no second record: not in
// HUB_PRESENCE, and not on hub.presence.<sn> either, where a record the
// stream refuses would still reach every core subscriber.
func TestTakeoverWithinGracePublishesNothing(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// Another node holds the device: its entry and its connected record.
	const sn = "TAKE-1"
	now := time.Now().UnixMilli()
	entry, _ := json.Marshal(PresenceEntry{Node: "other", Session: "old", Since: now, LastSeen: now, Type: "dog", Group: "g1"})
	kv, err := js.KeyValue(ctx, BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, sn, entry); err != nil {
		t.Fatal(err)
	}
	subj, _ := subjects.Presence(sn)
	rec, _ := json.Marshal(PresenceRecord{SN: sn, Type: "dog", Group: "g1", Online: true, Reason: ReasonConnected, Node: "other", At: now})
	if _, err := js.Publish(ctx, subj, rec); err != nil {
		t.Fatal(err)
	}
	heard := make(chan *nats.Msg, 4)
	backend := natstest.Connect(t, ns)
	sub, err := backend.ChanSubscribe(subj, heard)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}

	s, _ := attach(t, srv, 100, device(sn, "dog", "g1"))
	if err := srv.presence.connected(ctx, s); err != nil { // takes the entry over
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := kv.Get(ctx, sn)
		if err != nil {
			return err
		}
		var pe PresenceEntry
		_ = json.Unmarshal(e.Value(), &pe)
		if pe.Node != "t" {
			return errString("entry not taken over yet: " + string(e.Value()))
		}
		return nil
	})
	select {
	case m := <-heard:
		t.Fatalf("a second record reached hub.presence.%s: %s", sn, m.Data)
	case <-time.After(500 * time.Millisecond):
	}
	st, err := js.Stream(ctx, StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subj]; n != 1 {
		t.Fatalf("%d records for %s in %s, want the one connected", n, sn, StreamPresence)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
