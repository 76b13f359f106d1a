package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// A node whose device was reported node_lost while it still held it (the
// coordinator took the node for lost: cut off for a moment) learns it
// from its next refresh, which the bucket refuses: it writes the entry
// back and reports the device connected again, with nobody watching the
// bucket.
func TestRefusedRefreshRepairsEntry(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	srv := startTestServer(t, nc, Config{PresenceTTL: 2 * time.Second})
	const sn = "RP-1"
	s, _ := attach(t, srv, 100, device(sn, "dog", "g1"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.presence.connected(ctx, s); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	// What a coordinator does to a node it found lost: the node_lost
	// record, then the entry's removal.
	e, err := kv.Get(ctx, sn)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := subjects.Presence(sn)
	rec, _ := json.Marshal(PresenceRecord{SN: sn, Type: "dog", Group: "g1", Reason: ReasonNodeLost, Node: "t", At: time.Now().UnixMilli()})
	if _, err := js.Publish(ctx, subj, rec); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, sn, jetstream.LastRevision(e.Revision())); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() error {
		e, err := kv.Get(ctx, sn)
		if err != nil {
			return fmt.Errorf("entry: %w", err)
		}
		var pe PresenceEntry
		if err := json.Unmarshal(e.Value(), &pe); err != nil || pe.Session != s.id {
			return fmt.Errorf("entry %s", e.Value())
		}
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return err
		}
		var last PresenceRecord
		if err := json.Unmarshal(m.Data, &last); err != nil || !last.Online || last.Reason != ReasonConnected {
			return fmt.Errorf("last record %s", m.Data)
		}
		return nil
	})
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subj]; n != 3 {
		t.Fatalf("%d records, want connected, node_lost, connected", n)
	}
}
