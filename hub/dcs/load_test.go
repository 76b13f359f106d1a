//go:build load

package dcs

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// longCut is the partition of the long forms: longer than the server's
// wait for a source consumer create sent into the cut is short (the
// source then backs off), as in docs/multidc-notes.md (c, f).
const longCut = 20 * time.Second

// leftAlone bounds the wait for views whose sources are left alone.
const leftAlone = 150 * time.Second

// TestPartitionLeafLong: two domains over a leaf link, two cuts of 20 s
// with writes on both sides: with the engine's kick every view converges
// within 10 s of heal; without it (the control) the figure is what the
// server's own source retry gives.
func TestPartitionLeafLong(t *testing.T) {
	t.Run("kick", func(t *testing.T) {
		ctx := timeout(t, 5*time.Minute)
		p := leafPair(t, ctx, nil)
		p.connected(t, ctx)
		p.propagation(t, ctx)
		for round := 1; round <= 2; round++ {
			d := p.partition(t, ctx, round, longCut, 50, 60*time.Second)
			logSources(t, ctx, p)
			if d == 0 || d > 10*time.Second {
				t.Errorf("round %d: views converged %v after heal, want < 10 s", round, d)
			}
			t.Logf("leaf, kick, round %d: cut %v, views converged %.2f s after heal", round, longCut, d.Seconds())
		}
	})
	t.Run("no kick", func(t *testing.T) {
		ctx := timeout(t, 8*time.Minute)
		p := leafPair(t, ctx, func(c *Config) { c.noReturnKick, c.noHealthKick = true, true })
		p.connected(t, ctx)
		for round := 1; round <= 2; round++ {
			d := p.partition(t, ctx, round, longCut, 50, leftAlone)
			logSources(t, ctx, p)
			if d == 0 {
				t.Logf("leaf, no kick, round %d: cut %v, views NOT converged %v after heal", round, longCut, leftAlone)
				continue
			}
			t.Logf("leaf, no kick, round %d: cut %v, views converged %.2f s after heal", round, longCut, d.Seconds())
		}
	})
}

// TestStalledSourceKicked: with the kick on return disabled, the periodic
// check finds the sources stalled by a long cut (silent longer than the
// server's 10 s) and kicks them: the views converge within the check's
// period of the stall.
func TestStalledSourceKicked(t *testing.T) {
	ctx := timeout(t, 5*time.Minute)
	p := leafPair(t, ctx, func(c *Config) { c.noReturnKick, c.Recheck = true, 5*time.Second })
	p.connected(t, ctx)
	d := p.partition(t, ctx, 1, longCut, 50, 60*time.Second)
	logSources(t, ctx, p)
	if d == 0 {
		t.Fatal("views did not converge within 60 s of heal")
	}
	t.Logf("leaf, health kick only (check every 5 s): cut %v, views converged %.2f s after heal; kicks east %v west %v",
		longCut, d.Seconds(), kicks(p.east.e, "west"), kicks(p.west.e, "east"))
	if kicks(p.east.e, "west")+kicks(p.west.e, "east") == 0 {
		t.Error("no stalled source was kicked")
	}
}

// TestSuperclusterLong: one JetStream over gateways, a cut of 20 s: the
// one set of views converges after heal, with the kick and without.
func TestSuperclusterLong(t *testing.T) {
	for _, c := range []struct {
		name   string
		noKick bool
	}{{"kick", false}, {"no kick", true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := timeout(t, 6*time.Minute)
			p := superPair(t, ctx, func(cfg *Config) { cfg.noReturnKick, cfg.noHealthKick = c.noKick, c.noKick })
			p.connected(t, ctx)
			p.propagation(t, ctx)
			d := p.partition(t, ctx, 1, longCut, 50, leftAlone)
			logSources(t, ctx, p)
			if d == 0 {
				t.Logf("supercluster, %s: cut %v, view NOT converged %v after heal", c.name, longCut, leftAlone)
				if !c.noKick {
					t.Error("the view did not converge")
				}
				return
			}
			t.Logf("supercluster, %s: cut %v, view converged %.2f s after heal", c.name, longCut, d.Seconds())
		})
	}
}

// logSources logs the state of each view's sources as the servers report
// it.
func logSources(t *testing.T, ctx context.Context, p *pair) {
	t.Helper()
	for _, s := range p.views() {
		for _, name := range []string{"KV_t", "T"} {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := s.js.Stream(ictx, name)
			cancel()
			if err != nil {
				t.Logf("%s %s: %v", s.dc, name, err)
				continue
			}
			for _, si := range st.CachedInfo().Sources {
				t.Logf("%s %s: source %s active %v lag %d error %v", s.dc, name, si.Name, si.Active.Round(time.Millisecond), si.Lag, apiErr(si.Error))
			}
		}
	}
}

func apiErr(e *jetstream.APIError) string {
	if e == nil {
		return "none"
	}
	return e.Error()
}
