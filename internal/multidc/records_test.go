//go:build load

package multidc

import (
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRecordStreamsPerDC asks how per-DC record streams (HUB_STATUS and
// the like) can exist when stream subjects may not overlap in an account
// across the supercluster: each DC's stream captures a DC-scoped subject,
// republishes on the §6 subject for live subscribers, and a source-only
// aggregate with subject transforms answers the §6 name and subjects.
func TestRecordStreamsPerDC(t *testing.T) {
	two := twoDCs(t)
	ctx := timeout(t, 60*time.Second)

	// The §6 subjects captured by a stream in each DC: refused.
	if _, err := two.jsE.CreateStream(ctx, jetstream.StreamConfig{Name: "OVER_E", Subjects: []string{"hub.dev.*.status"}, Placement: &jetstream.Placement{Cluster: "east"}}); err != nil {
		t.Fatal(err)
	}
	_, err := two.jsW.CreateStream(ctx, jetstream.StreamConfig{Name: "OVER_W", Subjects: []string{"hub.dev.*.status"}, Placement: &jetstream.Placement{Cluster: "west"}})
	t.Logf("a second stream on hub.dev.*.status, placed in west: %s", errText(err))
	if err == nil {
		t.Fatal("overlapping stream subjects accepted")
	}
	if err := two.jsE.DeleteStream(ctx, "OVER_E"); err != nil {
		t.Fatal(err)
	}

	for _, dc := range []struct {
		js jetstream.JetStream
		dc string
	}{{two.jsE, "east"}, {two.jsW, "west"}} {
		_, err := dc.js.CreateStream(ctx, jetstream.StreamConfig{
			Name: "HUB_STATUS_" + dc.dc, Subjects: []string{"hub.dc." + dc.dc + ".dev.*.status"},
			Placement:   &jetstream.Placement{Cluster: dc.dc},
			AllowDirect: true,
			RePublish:   &jetstream.RePublish{Source: "hub.dc." + dc.dc + ".dev.*.status", Destination: "hub.dev.{{wildcard(1)}}.status"},
		})
		if err != nil {
			t.Fatalf("HUB_STATUS_%s: %v", dc.dc, err)
		}
	}
	src := func(dc string) *jetstream.StreamSource {
		return &jetstream.StreamSource{Name: "HUB_STATUS_" + dc, SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: "hub.dc." + dc + ".dev.*.status", Destination: "hub.dev.{{wildcard(1)}}.status"}}}
	}
	if _, err := two.jsE.CreateStream(ctx, jetstream.StreamConfig{
		Name: "HUB_STATUS", Placement: &jetstream.Placement{Cluster: "east"}, AllowDirect: true,
		Sources: []*jetstream.StreamSource{src("east"), src("west")},
	}); err != nil {
		t.Fatalf("source-only aggregate HUB_STATUS: %v", err)
	}
	if _, err := two.jsW.CreateStream(ctx, jetstream.StreamConfig{
		Name: "HUB_STATUS_view_west", Placement: &jetstream.Placement{Cluster: "west"},
		Mirror: &jetstream.StreamSource{Name: "HUB_STATUS"}, MirrorDirect: true,
	}); err != nil {
		t.Fatalf("west mirror: %v", err)
	}

	live, err := two.ncE.SubscribeSync("hub.dev.*.status")
	if err != nil {
		t.Fatal(err)
	}
	_ = two.ncE.Flush()
	liveW, err := two.jsW.Conn().SubscribeSync("hub.dev.*.status")
	if err != nil {
		t.Fatal(err)
	}
	_ = two.jsW.Conn().Flush()
	// East's interest reaches west's gateway before the first record.
	natstest.WaitReachable(t, two.westURL, two.eastURL, 10*time.Second, app)
	// A west node stores a status record: local ack.
	p50, worst, err := timed(20, func(int) error {
		_, err := two.jsW.Publish(ctx, "hub.dc.west.dev.R-001.status", []byte(`{"sn":"R-001"}`))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("west status record stored in HUB_STATUS_west: ack p50 %.2f ms max %.2f ms", ms(p50), ms(worst))
	if m, err := liveW.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("republished record on the §6 subject in west: %v", err)
	} else {
		t.Logf("a west subscriber of hub.dev.*.status got the republished record on %s", m.Subject)
	}
	m, err := live.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("republished record on the §6 subject in east: %v", err)
	}
	t.Logf("an east subscriber of hub.dev.*.status got the republished record on %s", m.Subject)

	agg, err := two.jsE.Stream(ctx, "HUB_STATUS")
	if err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, 10*time.Second, func() error {
		_, err := agg.GetLastMsgForSubject(ctx, "hub.dev.R-001.status")
		return err
	})
	t.Logf("HUB_STATUS (aggregate in east) answers the last record on hub.dev.R-001.status after %.0f ms", ms(d))
	aggW, err := two.jsW.Stream(ctx, "HUB_STATUS")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		_, err := aggW.GetLastMsgForSubject(ctx, "hub.dev.R-001.status")
		return err
	})
	p50, worst, err = timed(20, func(int) error {
		_, err := aggW.GetLastMsgForSubject(ctx, "hub.dev.R-001.status")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("west client: last record of HUB_STATUS by subject (direct get, answered by the west mirror): p50 %.1f ms max %.1f ms", ms(p50), ms(worst))
}
