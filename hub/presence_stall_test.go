package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// history reads a device's presence records from HUB_PRESENCE, in order.
func history(ctx context.Context, js jetstream.JetStream, sn string) ([]PresenceRecord, error) {
	cons, err := js.OrderedConsumer(ctx, StreamPresence, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"hub.presence." + sn}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, err
	}
	var out []PresenceRecord
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r PresenceRecord
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
	}
}

// alternation checks that records alternate strictly, starting online.
func alternation(recs []PresenceRecord) error {
	for i, r := range recs {
		if r.Online != (i%2 == 0) {
			return fmt.Errorf("record %d of %d is online=%v (%s): %+v", i, len(recs), r.Online, r.Reason, recs)
		}
	}
	return nil
}

// TestPresenceHistoryUnderSlowJetStream drives one device through
// sessions while JetStream loses answers, in the three ways that used to
// break its history: an entry write that took effect but timed out, a
// connected record that never reached the stream, and an offline record
// stored while its answer (and the entry's removal) waited past the
// attempt's timeout. The history in HUB_PRESENCE alternates strictly
// after each, and ends offline with the device.
func TestPresenceHistoryUnderSlowJetStream(t *testing.T) {
	t.Parallel()
	const grace = 200 * time.Millisecond
	srv, px, ns := proxiedServer(t, Config{OfflineGrace: grace, PresenceTTL: time.Minute})
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const sn = "HS-1"
	want := func(n int, timeout time.Duration) {
		t.Helper()
		natstest.Eventually(t, timeout, func() error {
			recs, err := history(ctx, js, sn)
			if err != nil {
				return err
			}
			if err := alternation(recs); err != nil {
				return err
			}
			if len(recs) != n {
				return fmt.Errorf("%d records, want %d: %+v", len(recs), n, recs)
			}
			return nil
		})
	}
	open := func() *Session {
		s, _ := attach(t, srv, 16, device(sn, "dog", "g1"))
		return s
	}
	join := func(s *Session, timeout time.Duration) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return srv.presence.connected(cctx, s)
	}
	connect := func(timeout time.Duration) (*Session, error) {
		s := open()
		return s, join(s, timeout)
	}
	leave := func(s *Session) { s.Gone(ReasonClosed) }

	// A: the device's first entry is created, but the answer comes too
	// late and the session is refused; the device tries again on a new
	// session, which must be reported connected (before: its write found
	// the entry, and made no record).
	s1 := open()
	px.stall()
	err = join(s1, 300*time.Millisecond)
	px.resume()
	if err == nil {
		t.Fatal("connected although JetStream did not answer")
	}
	s1.Gone(ReasonClosed)
	s2, err := connect(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want(1, 5*time.Second)
	leave(s2)
	want(2, 5*time.Second)

	// B: the connected record never reaches the stream: the session is
	// served all the same, and its record follows.
	px.dropPublishes("hub.presence.", 1)
	s3, err := connect(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want(3, 10*time.Second)

	// C: the offline record is stored, but its answer waits longer than
	// the attempt may take, and so does everything after it (the removal
	// of the entry). Tried again, the expiry finds the record stored and
	// removes the entry: the device's next session is reported connected.
	px.stallAtPublish("hub.presence.")
	leave(s3)
	want(4, 5*time.Second)
	time.Sleep(presenceCallTimeout + time.Second) // JetStream stays silent past the attempt
	px.resume()
	natstest.Eventually(t, 10*time.Second, func() error {
		kv, err := js.KeyValue(ctx, BucketPresence)
		if err != nil {
			return err
		}
		if _, err := kv.Get(ctx, sn); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("entry still there: %v", err)
		}
		return nil
	})
	s4, err := connect(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want(5, 5*time.Second)
	leave(s4)
	want(6, 5*time.Second)
}
