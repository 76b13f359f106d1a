package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A NATS server that crashes may lose its last writes without telling any
// watcher. After reconnecting, a node puts back a lost entry of a device
// it holds and drops a revision the bucket lost, with no record: the
// devices never went offline, and their entries keep being refreshed.
func TestPresenceReassertAfterReconnect(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	const ttl = 3 * time.Second // refreshed every 2 s
	tr := openTracker(t, ns, "t", Config{PresenceTTL: ttl}, nats.ReconnectWait(10*time.Millisecond))
	nc := tr.cfg.Conn
	obs := natstest.Connect(t, ns)
	js, err := jetstream.New(obs)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var records []schema.PresenceRecord
	sub, err := obs.Subscribe(subjects.AllPresence, func(m *nats.Msg) {
		var r schema.PresenceRecord
		if json.Unmarshal(m.Data, &r) == nil {
			mu.Lock()
			records = append(records, r)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := obs.Flush(); err != nil { // the subscription is in place
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sn := range []string{"RA-lost", "RA-rev"} {
		if err := tr.Connected(ctx, dev(sn, "s-"+sn)); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, schema.BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(records) != 2 {
			return fmt.Errorf("%d records", len(records))
		}
		return nil
	})
	// What a crash loses: one entry gone with no marker or message (a
	// subject purge of the stream), and a revision this node learned that
	// the bucket no longer has.
	stream, err := js.Stream(ctx, "KV_"+schema.BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subjects.KVKeys(schema.BucketPresence)+"RA-lost")); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	tr.local["RA-rev"].rev += 1 << 40
	tr.mu.Unlock()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	entry := func(sn string) (jetstream.KeyValueEntry, schema.PresenceEntry, error) {
		var pe schema.PresenceEntry
		e, err := kv.Get(ctx, sn)
		if err != nil {
			return nil, pe, fmt.Errorf("%s: %w", sn, err)
		}
		return e, pe, json.Unmarshal(e.Value(), &pe)
	}
	natstest.Eventually(t, 15*time.Second, func() error {
		_, pe, err := entry("RA-lost")
		if err != nil {
			return err
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if ld := tr.local["RA-lost"]; pe.Session != ld.session {
			return fmt.Errorf("entry of session %s, held %s", pe.Session, ld.session)
		}
		if rev := tr.local["RA-rev"].rev; rev > 1<<40 {
			return fmt.Errorf("revision %d kept", rev)
		}
		return nil
	})
	// Both entries are refreshed again, twice each: longer than a TTL.
	seen := map[string]map[uint64]bool{"RA-lost": {}, "RA-rev": {}}
	natstest.Eventually(t, 4*ttl, func() error {
		for sn, revs := range seen {
			e, pe, err := entry(sn)
			if err != nil {
				return err
			}
			if pe.Node == "t" {
				revs[e.Revision()] = true
			}
		}
		for sn, revs := range seen {
			if len(revs) < 3 {
				return fmt.Errorf("%s: revisions %v", sn, revs)
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(records) != 2 {
		t.Fatalf("records %+v: want only the two connected", records)
	}
}
