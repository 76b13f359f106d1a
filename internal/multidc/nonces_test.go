//go:build load

package multidc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// dcNonces is one DC's replay protection: its own bucket, where a claim
// is a create (atomic within the DC), and a bucket sourcing every other
// DC's own bucket, read (a local direct get) before the create.
type dcNonces struct {
	own, seen jetstream.KeyValue
}

var errReplay = errors.New("replay")

func (n dcNonces) claim(ctx context.Context, nonce string) error {
	if _, err := n.seen.Get(ctx, nonce); err == nil {
		return errReplay
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	_, err := n.own.Create(ctx, nonce, nil)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return errReplay
	}
	return err
}

// TestNoncesAcrossDCs answers question d: per-DC nonce buckets, each DC
// sourcing the other's into a local "seen" bucket: a nonce used in east
// is refused in west within 1 s while connected, each side refuses its own
// replays during a cut, and the sets merge after heal.
func TestNoncesAcrossDCs(t *testing.T) {
	two := twoDCs(t)
	ctx := timeout(t, 120*time.Second)
	const window = 2 * time.Minute

	open := func(js jetstream.JetStream, dc, other string) dcNonces {
		t.Helper()
		own, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_nonces_" + dc, TTL: window, Placement: &jetstream.Placement{Cluster: dc}})
		if err != nil {
			t.Fatal(err)
		}
		seen, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: "hub_nonces_seen_" + dc, TTL: window, Placement: &jetstream.Placement{Cluster: dc},
			Sources: []*jetstream.StreamSource{{Name: "hub_nonces_" + other}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return dcNonces{own, seen}
	}
	east, west := open(two.jsE, "east", "west"), open(two.jsW, "west", "east")

	// A claim costs no WAN round trip.
	p50, worst, err := timed(50, func(int) error { return west.claim(ctx, nuid.Next()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claim in west (seen get + own create): p50 %.2f ms max %.2f ms", ms(p50), ms(worst))
	if p50 > wanDelay {
		t.Errorf("a claim took %v: a WAN round trip", p50)
	}

	// Propagation: used in east, refused in west. The first nonce after
	// the seen bucket's creation waits for its source consumer to start:
	// it is reported apart.
	first := nuid.Next()
	if err := east.claim(ctx, first); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, 10*time.Second, func() error { _, err := west.seen.Get(ctx, first); return err })
	t.Logf("first east nonce after the seen buckets were created reached west after %.0f ms", ms(d))
	var prop []time.Duration
	for range 20 {
		n := nuid.Next()
		if err := east.claim(ctx, n); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		waitFor(t, 5*time.Second, func() error {
			if _, err := west.seen.Get(ctx, n); err != nil {
				return err
			}
			return nil
		})
		prop = append(prop, time.Since(t0))
		if err := west.claim(ctx, n); !errors.Is(err, errReplay) {
			t.Fatalf("replay in west of an east nonce: %v", err)
		}
	}
	p50, worst = median(prop)
	t.Logf("propagation of each of 20 nonces: %v", prop)
	t.Logf("east nonce refused in west after: p50 %.1f ms max %.1f ms (20 nonces, %v WAN each way)", ms(p50), ms(worst), wanDelay)
	if worst > time.Second {
		t.Errorf("propagation %v > 1 s", worst)
	}

	// A cut: each side refuses its own replays; a nonce used on both sides
	// is accepted on both (no side can know); after heal the sets merge.
	two.sc.Cut()
	cutAt := time.Now()
	both := nuid.Next()
	for _, dc := range []dcNonces{east, west} {
		if err := dc.claim(ctx, both); err != nil {
			t.Fatalf("first use during cut: %v", err)
		}
		if err := dc.claim(ctx, both); !errors.Is(err, errReplay) {
			t.Fatalf("own replay during cut: %v", err)
		}
	}
	var cutE, cutW []string
	for i := range 50 {
		ne, nw := fmt.Sprintf("cut-e-%d-%s", i, nuid.Next()), fmt.Sprintf("cut-w-%d-%s", i, nuid.Next())
		if err := east.claim(ctx, ne); err != nil {
			t.Fatal(err)
		}
		if err := west.claim(ctx, nw); err != nil {
			t.Fatal(err)
		}
		cutE, cutW = append(cutE, ne), append(cutW, nw)
	}
	if err := west.claim(ctx, cutE[0]+"x"); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut: claims work on both sides; a nonce used in both DCs during the cut was accepted once in each")
	waitFor(t, 60*time.Second, func() error {
		if time.Since(cutAt) < 5*time.Second {
			return errNotYet
		}
		return nil
	})
	two.sc.Heal()
	t0 := time.Now()
	has := func(n dcNonces, keys []string) func() error {
		return func() error {
			for _, k := range keys {
				if _, err := n.seen.Get(ctx, k); err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
			}
			return nil
		}
	}
	natstest.WaitReachable(t, two.eastURL, two.westURL, 60*time.Second, app)
	dGw := time.Since(t0)
	var dW, dE time.Duration
	waitFor(t, 90*time.Second, func() error {
		if dW == 0 && has(west, cutE)() == nil {
			dW = time.Since(t0)
		}
		if dE == 0 && has(east, cutW)() == nil {
			dE = time.Since(t0)
		}
		if dW == 0 || dE == 0 {
			return errNotYet
		}
		return nil
	})
	t.Logf("heal after %.1f s of cut: gateway carries requests after %.0f ms; west's seen set holds east's 50 cut nonces after %.0f ms, east's holds west's after %.0f ms", t0.Sub(cutAt).Seconds(), ms(dGw), ms(dW), ms(dE))
	for _, dc := range []dcNonces{east, west} {
		if err := dc.claim(ctx, both); !errors.Is(err, errReplay) {
			t.Fatalf("nonce used on both sides accepted after heal: %v", err)
		}
	}
	if err := east.claim(ctx, cutW[7]); !errors.Is(err, errReplay) {
		t.Fatalf("west cut nonce accepted in east after heal: %v", err)
	}
	// The merged seen set keeps the first write of a key: the conflicting
	// creates are two entries of one key in the two DCs, not an error.
	if e, err := east.seen.Get(ctx, both); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("after heal the nonce used on both sides is in east's seen set (revision %d) and east's own", e.Revision())
	}
}

// TestMutualSourcesRefused checks the simpler shape, one nonce bucket
// per DC that both takes the DC's claims and sources the other DC's
// bucket: would a create then see both DCs' nonces in one local call, or
// do the two sources copy each other's copies for ever?
func TestMutualSourcesRefused(t *testing.T) {
	sc := natstest.StartSupercluster(t, natstest.SuperclusterOptions{Extra: accounts})
	eastURL, westURL := sc.Cluster("east").Servers[0].URL(), sc.Cluster("west").Servers[0].URL()
	natstest.WaitReachable(t, eastURL, westURL, 30*time.Second, app)
	_, jsE := connect(t, eastURL, "", app)
	_, jsW := connect(t, westURL, "", app)
	waitJS(t, jsE, 60*time.Second)
	waitJS(t, jsW, 60*time.Second)
	ctx := timeout(t, 60*time.Second)
	mk := func(js jetstream.JetStream, dc, other string) (jetstream.KeyValue, jetstream.Stream) {
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "n_" + dc, Placement: &jetstream.Placement{Cluster: dc}, History: 1})
		if err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, "KV_n_"+dc)
		if err != nil {
			t.Fatal(err)
		}
		return kv, s
	}
	kvE, sE := mk(jsE, "east", "west")
	kvW, sW := mk(jsW, "west", "east")
	for _, c := range []struct {
		js          jetstream.JetStream
		dc, other   string
		placeholder jetstream.KeyValue
	}{{jsE, "east", "west", kvE}, {jsW, "west", "east", kvW}} {
		_, err := c.js.UpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: "n_" + c.dc, Placement: &jetstream.Placement{Cluster: c.dc}, History: 1,
			Sources: []*jetstream.StreamSource{{Name: "n_" + c.other}},
		})
		if c.dc == "west" {
			// The server refuses the second half of a mutual pair.
			t.Logf("n_%s sourcing n_%s while n_%s sources n_%s: %s", c.dc, c.other, c.other, c.dc, errText(err))
			if err == nil || !strings.Contains(err.Error(), "cycle") {
				t.Fatalf("mutual sources accepted: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("n_%s sourcing n_%s: %v", c.dc, c.other, err)
		}
	}
	if _, err := kvE.Create(ctx, "nonce1", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error { _, err := kvW.Get(ctx, "nonce1"); return err })
	_, err := kvW.Create(ctx, "nonce1", nil)
	t.Logf("west create of a nonce east used, one mutual bucket: %s", errText(err))
	// Watch the message counts for a while (bounded): a loop makes them
	// grow with every round trip of the sources.
	var le, lw uint64
	t0 := time.Now()
	for time.Since(t0) < 3*time.Second {
		ie, err1 := sE.Info(ctx)
		iw, err2 := sW.Info(ctx)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		le, lw = ie.State.LastSeq, iw.State.LastSeq
		if le > 10 || lw > 10 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("after one create in east and %.1f s: last sequence east %d, west %d (%s)", time.Since(t0).Seconds(), le, lw,
		map[bool]string{true: "the sources copy each other's copies: a loop", false: "no loop"}[le > 10 || lw > 10])
}

func median(ds []time.Duration) (p50, worst time.Duration) {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2], s[len(s)-1]
}
