//go:build load

package multidc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

const wanDelay = 40 * time.Millisecond

// TestSuperclusterNamesPlacementAndMinority answers questions a and b:
// stream names are one namespace across the supercluster, a bucket placed
// by cluster name serves writes locally, and the minority data centre
// during a cut keeps writing to and reading from its existing streams but
// cannot create streams or consumers.
func TestSuperclusterNamesPlacementAndMinority(t *testing.T) {
	sc := natstest.StartSupercluster(t, natstest.SuperclusterOptions{Sizes: []int{2, 1}, Delay: wanDelay, Extra: accounts})
	eastURL, westURL := sc.Cluster("east").Servers[0].URL(), sc.Cluster("west").Servers[0].URL()
	natstest.WaitReachable(t, eastURL, westURL, 30*time.Second, app)
	natstest.WaitReachable(t, westURL, eastURL, 30*time.Second, app)
	_, jsE := connect(t, eastURL, "", app)
	_, jsW := connect(t, westURL, "", app)
	waitJS(t, jsE, 60*time.Second)
	waitJS(t, jsW, 60*time.Second)
	leader, size := metaLeader(t, eastURL)
	t.Logf("meta group: %d peers, leader %s", size, leader)

	// a. One namespace: the second DC cannot have its own KV_hub_presence.
	ctx := timeout(t, 20*time.Second)
	_, err := jsE.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence", Placement: &jetstream.Placement{Cluster: "east"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence", Placement: &jetstream.Placement{Cluster: "west"}})
	t.Logf("west creating its own hub_presence placed in west: %s", errText(err))
	if err == nil {
		t.Fatal("a second KV_hub_presence was created")
	}
	// Without placement the west create succeeds, answering the bucket that
	// lives in east: the state of the DC that started first.
	kv, err := jsW.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence"})
	if err != nil {
		t.Logf("west create-or-update of hub_presence without placement: %v", err)
	} else {
		st, _ := kv.Status(ctx)
		t.Logf("west create-or-update of hub_presence without placement: ok, stream in cluster %q", clusterOf(ctx, t, jsW, st.Bucket()))
	}

	// b. Placement by cluster name and write latency from each side.
	kvW, err := jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence_west", Placement: &jetstream.Placement{Cluster: "west"}, LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c := clusterOf(ctx, t, jsW, "hub_presence_west"); c != "west" {
		t.Fatalf("placed in %q", c)
	}
	kvWfromE, err := jsE.KeyValue(ctx, "hub_presence_west")
	if err != nil {
		t.Fatal(err)
	}
	kvEfromW, err := jsW.KeyValue(ctx, "hub_presence")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    func(i int) error
	}{
		{"west client put, west bucket", func(i int) error { _, err := kvW.Put(ctx, key(i), []byte("v")); return err }},
		{"west client create, west bucket", func(i int) error { _, err := kvW.Create(ctx, key(100+i), []byte("v")); return err }},
		{"west client get, west bucket", func(i int) error { _, err := kvW.Get(ctx, key(i)); return err }},
		{"west client put, east bucket", func(i int) error { _, err := kvEfromW.Put(ctx, key(i), []byte("v")); return err }},
		{"east client put, west bucket", func(i int) error { _, err := kvWfromE.Put(ctx, key(i), []byte("v")); return err }},
		{"west client watch start (consumer create), west bucket", func(i int) error { return watchOnce(ctx, kvW) }},
		{"west client stream info, west bucket", func(i int) error { _, err := jsW.Stream(ctx, "KV_hub_presence_west"); return err }},
	} {
		p50, worst, err := timed(20, c.f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		t.Logf("%-58s p50 %6.1f ms  max %6.1f ms", c.name, ms(p50), ms(worst))
	}

	// A watch started before the cut: does it keep delivering?
	wctx, wcancel := context.WithCancel(t.Context())
	defer wcancel()
	w, err := kvW.Watch(wctx, "live.>", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	// During a cut: east (2 of 3 meta peers) keeps a meta leader, west
	// (1 of 3) loses it.
	sc.Cut()
	cutAt := time.Now()
	d := waitFor(t, 30*time.Second, func() error {
		l, _ := metaLeader(t, eastURL)
		if !strings.HasPrefix(l, "east") {
			return errNotYet
		}
		return nil
	})
	t.Logf("cut: east has meta leader after %v", d.Round(time.Millisecond))
	for _, c := range []struct {
		name string
		ok   bool // the finding: whether it works in the minority DC
		f    func(ctx context.Context) error
	}{
		{"put, west bucket", true, func(ctx context.Context) error { _, err := kvW.Put(ctx, "cut-put", []byte("v")); return err }},
		{"create, west bucket", true, func(ctx context.Context) error { _, err := kvW.Create(ctx, "cut-create", []byte("v")); return err }},
		{"create again (replay), west bucket", false, func(ctx context.Context) error { _, err := kvW.Create(ctx, "cut-create", []byte("v")); return err }},
		{"update (CAS), west bucket", true, func(ctx context.Context) error {
			e, err := kvW.Get(ctx, "cut-put")
			if err != nil {
				return err
			}
			_, err = kvW.Update(ctx, "cut-put", []byte("w"), e.Revision())
			return err
		}},
		{"direct get, west bucket", true, func(ctx context.Context) error { _, err := kvW.Get(ctx, "cut-put"); return err }},
		{"delete, west bucket", true, func(ctx context.Context) error { return kvW.Delete(ctx, "cut-create") }},
		{"watch start (consumer create), west bucket", false, func(ctx context.Context) error { return watchOnce(ctx, kvW) }},
		{"stream info, west bucket", true, func(ctx context.Context) error { _, err := jsW.Stream(ctx, "KV_hub_presence_west"); return err }},
		{"create stream placed in west", false, func(ctx context.Context) error {
			_, err := jsW.CreateStream(ctx, jetstream.StreamConfig{Name: "CUT_W", Subjects: []string{"cutw.>"}, Placement: &jetstream.Placement{Cluster: "west"}})
			return err
		}},
		{"watch started before the cut delivers", true, func(ctx context.Context) error {
			if _, err := kvW.Put(ctx, "live.1", []byte("v")); err != nil {
				return err
			}
			select {
			case e := <-w.Updates():
				if e == nil || e.Key() != "live.1" {
					return errNotYet
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{"direct get batch multi_last (listing), west bucket", true, func(ctx context.Context) error {
			n, err := lastPerKey(ctx, nc(jsW), "KV_hub_presence_west", "$KV.hub_presence_west.>")
			if err == nil && n == 0 {
				return errNotYet
			}
			return err
		}},
		{"put, east bucket from west", false, func(ctx context.Context) error { _, err := kvEfromW.Put(ctx, "x", []byte("v")); return err }},
	} {
		d, err := attempt(t, 3*time.Second, c.f)
		t.Logf("cut, west: %-44s %-6s in %6.1f ms (%s)", c.name, okOr(err), ms(d), errText(err))
		if (err == nil) != c.ok {
			t.Errorf("cut, west: %s: %v, expected ok=%v", c.name, err, c.ok)
		}
	}
	d, err = attempt(t, 5*time.Second, func(ctx context.Context) error {
		_, err := jsE.CreateStream(ctx, jetstream.StreamConfig{Name: "CUT_E", Subjects: []string{"cute.>"}, Placement: &jetstream.Placement{Cluster: "east"}})
		return err
	})
	t.Logf("cut, east: %-44s %-6s in %6.1f ms (%s)", "create stream placed in east", okOr(err), ms(d), errText(err))
	if err != nil {
		t.Errorf("the majority side could not create a stream: %v", err)
	}

	sc.Heal()
	healAt := time.Now()
	d = waitFor(t, 60*time.Second, func() error {
		_, err := attempt(t, time.Second, func(ctx context.Context) error { return watchOnce(ctx, kvW) })
		return err
	})
	t.Logf("heal after %v of cut: west creates consumers again after %v", healAt.Sub(cutAt).Round(time.Millisecond), d.Round(time.Millisecond))
	d = waitFor(t, 60*time.Second, func() error {
		_, err := jsW.Stream(timeout(t, time.Second), "CUT_E")
		return err
	})
	t.Logf("heal: west sees the stream east created during the cut after %v", time.Since(healAt).Round(time.Millisecond))
}

func clusterOf(ctx context.Context, t *testing.T, js jetstream.JetStream, bucket string) string {
	t.Helper()
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if ci := s.CachedInfo().Cluster; ci != nil {
		return ci.Name
	}
	return ""
}

// watchOnce starts a watch (an ordered consumer) on kv and waits for its
// initial values to end.
func watchOnce(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func key(i int) string { return "k" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func okOr(err error) string {
	if err == nil {
		return "ok"
	}
	return "FAILED"
}
