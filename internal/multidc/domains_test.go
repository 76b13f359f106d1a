//go:build load

package multidc

import (
	"context"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSuperclusterWithDomainPerCluster asks whether two clusters joined
// by gateways can each have their own JetStream domain, so that core NATS
// is a full mesh (gateways) while each DC's JetStream is its own.
func TestSuperclusterWithDomainPerCluster(t *testing.T) {
	sc := natstest.StartSupercluster(t, natstest.SuperclusterOptions{Delay: wanDelay, JSDomains: []string{"east", "west"}, Extra: accounts})
	eastURL, westURL := sc.Cluster("east").Servers[0].URL(), sc.Cluster("west").Servers[0].URL()
	natstest.WaitReachable(t, eastURL, westURL, 30*time.Second, app)
	_, jsE := connect(t, eastURL, "", app)
	_, jsW := connect(t, westURL, "", app)
	ctx := timeout(t, 60*time.Second)
	domains := map[string]string{}
	for _, c := range []struct {
		dc string
		js jetstream.JetStream
	}{{"east", jsE}, {"west", jsW}} {
		var ai *jetstream.AccountInfo
		natstest.Eventually(t, 60*time.Second, func() error {
			var err error
			ai, err = c.js.AccountInfo(timeout(t, 2*time.Second))
			return err
		})
		domains[c.dc] = ai.Domain
	}
	t.Logf("configured domains east, west; JetStream answers east clients as domain %q, west clients as %q", domains["east"], domains["west"])
	if domains["east"] != domains["west"] {
		t.Logf("one domain per cluster across gateways works")
	} else {
		t.Logf("the clusters formed one JetStream (one meta group) despite their domains: a domain per DC needs leaf links, not gateways")
	}
	_, err := jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence"})
	t.Logf("west creates hub_presence: %s", errText(err))
	_, err = jsE.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hub_presence"})
	t.Logf("east creates its own hub_presence: %s", errText(err))
	sc.Cut()
	d, err := attempt(t, 3*time.Second, func(ctx context.Context) error {
		kv, err := jsW.KeyValue(ctx, "hub_presence")
		if err != nil {
			return err
		}
		return watchOnce(ctx, kv)
	})
	t.Logf("cut: west starts a watch: %s in %.1f ms", errText(err), ms(d))
}

func tail(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			lines++
			if lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}
