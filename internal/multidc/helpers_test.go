//go:build load

package multidc

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// accounts gives the servers a system account (to ask for the JetStream
// meta leader) and an application account with JetStream.
const accounts = `
accounts {
  SYS { users: [{user: sys, password: sys}] }
  APP { jetstream: enabled, users: [{user: app, password: app}] }
}
system_account: SYS
`

var app = nats.UserInfo("app", "app")

// connect opens an application connection with JetStream (in domain, when
// given), closed when the test ends.
func connect(t *testing.T, url string, domain string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var js jetstream.JetStream
	if domain != "" {
		js, err = jetstream.NewWithDomain(nc, domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitJS waits until JetStream answers a stream create through js (the
// meta group has a leader reachable from js).
func waitJS(t *testing.T, js jetstream.JetStream, d time.Duration) {
	t.Helper()
	natstest.Eventually(t, d, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
}

// metaLeader asks every server reachable from url (system account) for
// its JetStream meta group view and returns the leader most name.
func metaLeader(t *testing.T, url string) (leader string, size int) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo("sys", "sys"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$SYS.REQ.SERVER.PING.JSZ", inbox, nil); err != nil {
		t.Fatal(err)
	}
	votes := map[string]int{}
	for {
		m, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			break
		}
		var r struct {
			Data struct {
				Meta struct {
					Leader string `json:"leader"`
					Size   int    `json:"cluster_size"`
				} `json:"meta_cluster"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &r) == nil && r.Data.Meta.Leader != "" {
			votes[r.Data.Meta.Leader]++
			size = r.Data.Meta.Size
		}
	}
	best := 0
	for l, n := range votes {
		if n > best {
			leader, best = l, n
		}
	}
	return leader, size
}

// timed runs f n times and returns the median and the largest duration,
// or f's first error.
func timed(n int, f func(i int) error) (p50, worst time.Duration, err error) {
	var ds []time.Duration
	for i := range n {
		t0 := time.Now()
		if err := f(i); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1], nil
}

// attempt runs f with a deadline and reports how long it took and its
// error, for an operation that may fail during a partition.
func attempt(t *testing.T, d time.Duration, f func(ctx context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	t0 := time.Now()
	err := f(ctx)
	return time.Since(t0), err
}

// waitFor polls f every 5 ms until it returns nil and returns the time it
// took, failing the test after d.
func waitFor(t *testing.T, d time.Duration, f func() error) time.Duration {
	t.Helper()
	t0 := time.Now()
	deadline := t0.Add(d)
	for {
		err := f()
		if err == nil {
			return time.Since(t0)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

var errNotYet = errors.New("not yet")

func nc(js jetstream.JetStream) *nats.Conn { return js.Conn() }

// lastPerKey lists the last message of every subject matching filter in
// stream with one direct get batch request (multi_last): answered by any
// peer of the stream or a MirrorDirect mirror, without a consumer (and so
// without the meta leader). It returns the number of messages.
func lastPerKey(ctx context.Context, nc *nats.Conn, stream, filter string) (int, error) {
	req, _ := json.Marshal(map[string]any{"multi_last": []string{filter}, "batch": 10000})
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
		return 0, err
	}
	n := 0
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return n, err
		}
		// The batch ends with an empty message whose status is 204 (EOB).
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			if st := m.Header.Get("Status"); st == "204" {
				return n, nil
			} else {
				return n, errors.New("direct get: status " + st + " " + m.Header.Get("Description"))
			}
		}
		n++
	}
}

// dcs is the supercluster most experiments run on: east and west over a
// delayed WAN, each with a client (user app) whose JetStream answers.
type dcs struct {
	sc               *natstest.Supercluster
	eastURL, westURL string
	ncE              *nats.Conn
	jsE, jsW         jetstream.JetStream
}

// twoDCs starts the supercluster and waits until each side reaches the
// other and both JetStreams answer.
func twoDCs(t *testing.T) *dcs {
	t.Helper()
	d := &dcs{sc: natstest.StartSupercluster(t, natstest.SuperclusterOptions{Delay: wanDelay, Extra: accounts})}
	d.eastURL, d.westURL = d.sc.Cluster("east").Servers[0].URL(), d.sc.Cluster("west").Servers[0].URL()
	natstest.WaitReachable(t, d.eastURL, d.westURL, 30*time.Second, app)
	natstest.WaitReachable(t, d.westURL, d.eastURL, 30*time.Second, app)
	d.ncE, d.jsE = connect(t, d.eastURL, "", app)
	_, d.jsW = connect(t, d.westURL, "", app)
	waitJS(t, d.jsE, 60*time.Second)
	waitJS(t, d.jsW, 60*time.Second)
	return d
}
