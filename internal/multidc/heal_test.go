//go:build load

package multidc

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSourcesResumeAfterHeal measures how long an aggregate's source in
// the other DC takes to deliver again after cuts of growing length, and
// whether an update of the aggregate (the source dropped and added back)
// right after heal brings it back at once. The server waits up to 30 s
// for a source consumer create sent into a cut before retrying, and backs
// off 10 s per failure up to 2 min (stream.go srcConsumerWaitTime,
// calculateRetryBackoff).
func TestSourcesResumeAfterHeal(t *testing.T) {
	two := twoDCs(t)
	ctx := timeout(t, 15*time.Minute)
	srcW, err := two.jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence_west", Placement: &jetstream.Placement{Cluster: "west"}})
	if err != nil {
		t.Fatal(err)
	}
	aggCfg := jetstream.KeyValueConfig{Bucket: "hub_presence", Placement: &jetstream.Placement{Cluster: "east"},
		Sources: []*jetstream.StreamSource{{Name: "hub_presence_west"}}}
	view, err := two.jsE.CreateKeyValue(ctx, aggCfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := func(k string) func() error {
		return func() error { _, err := view.Get(ctx, k); return err }
	}
	if _, err := srcW.Put(ctx, "warm", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, seen("warm"))

	for i, c := range []struct {
		cut    time.Duration
		update bool
	}{{5 * time.Second, false}, {15 * time.Second, false}, {40 * time.Second, false}, {15 * time.Second, true}, {40 * time.Second, true}} {
		two.sc.Cut()
		cutAt := time.Now()
		k := fmt.Sprintf("cut%d", i)
		if _, err := srcW.Put(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, c.cut+10*time.Second, func() error {
			if time.Since(cutAt) < c.cut {
				return errNotYet
			}
			return nil
		})
		two.sc.Heal()
		t0 := time.Now()
		natstest.WaitReachable(t, two.eastURL, two.westURL, 60*time.Second, app)
		if c.update {
			// Drop the source and add it back: the new source starts from
			// the last sequence the aggregate holds from it.
			waitJS(t, two.jsE, 60*time.Second)
			natstest.Eventually(t, 30*time.Second, func() error {
				_, err := two.jsE.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence", Placement: &jetstream.Placement{Cluster: "east"}})
				return err
			})
			natstest.Eventually(t, 30*time.Second, func() error {
				_, err := two.jsE.UpdateKeyValue(ctx, aggCfg)
				return err
			})
		}
		waitFor(t, 4*time.Minute, seen(k))
		t.Logf("cut of %v, update after heal %v: aggregate has the key written during the cut %.1f s after heal", c.cut, c.update, time.Since(t0).Seconds())
	}
	info, err := two.jsE.Stream(ctx, "KV_hub_presence")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 6 {
		t.Errorf("aggregate holds %d messages, want 6 (no duplicate after re-adding the source)", n)
	}
}
