package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// lockedBuffer is a bytes.Buffer that a running hubctl may write while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tailRun is an endless hubctl command running in the background.
type tailRun struct {
	out, errb lockedBuffer
	cancel    context.CancelFunc
	ended     chan struct{} // closed when hubctl has returned code
	code      int
}

// startTail runs hubctl with args until stop (or the end of the test).
func startTail(t *testing.T, args ...string) *tailRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &tailRun{cancel: cancel, ended: make(chan struct{})}
	go func() {
		tr.code = runCtx(ctx, args, &tr.out, &tr.errb)
		close(tr.ended)
	}()
	t.Cleanup(func() { tr.stop(t) })
	return tr
}

// stop interrupts the command and returns how it ended.
func (tr *tailRun) stop(t *testing.T) result {
	t.Helper()
	tr.cancel()
	select {
	case <-tr.ended:
		return result{tr.code, tr.out.String(), tr.errb.String()}
	case <-time.After(20 * time.Second):
		t.Error("hubctl did not stop when interrupted")
		return result{code: -1}
	}
}

// exited fails the test if the command has ended on its own.
func (tr *tailRun) exited(t *testing.T) {
	t.Helper()
	select {
	case <-tr.ended:
		t.Fatalf("hubctl exited %d before it was stopped, stderr %q", tr.code, tr.errb.String())
	default:
	}
}

// waitTailSub waits until hubctl's connection has subscribed to subject,
// so that what the test publishes next reaches it.
func waitTailSub(t *testing.T, ns *server.Server, tr *tailRun, subject string) {
	t.Helper()
	natstest.Eventually(t, 5*time.Second, func() error {
		tr.exited(t)
		cz, err := ns.Connz(&server.ConnzOptions{Subscriptions: true})
		if err != nil {
			return err
		}
		for _, c := range cz.Conns {
			if c.Name == "hubctl" && slices.Contains(c.Subs, subject) {
				return nil
			}
		}
		return fmt.Errorf("hubctl has not subscribed to %s", subject)
	})
}

// presenceLines decodes tail's output, checking that it is compact JSON,
// one record per line.
func presenceLines(out string) ([]schema.PresenceRecord, error) {
	var recs []schema.PresenceRecord
	for line := range strings.Lines(out) {
		line, complete := strings.CutSuffix(line, "\n")
		if !complete {
			return nil, fmt.Errorf("partial line %q", line)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(line)); err != nil || compact.String() != line {
			return nil, fmt.Errorf("line %q is not compact JSON (%v)", line, err)
		}
		var r schema.PresenceRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// connectedOnce checks that recs hold exactly one connected record per
// serial number in sns, and nothing else.
func connectedOnce(recs []schema.PresenceRecord, node, typ, group string, sns ...string) error {
	if len(recs) != len(sns) {
		return fmt.Errorf("%d records %+v, want one for each of %v", len(recs), recs, sns)
	}
	for _, sn := range sns {
		i := slices.IndexFunc(recs, func(r schema.PresenceRecord) bool { return r.SN == sn })
		if i < 0 {
			return fmt.Errorf("no record for %s in %+v", sn, recs)
		}
		r := recs[i]
		if !r.Online || r.Reason != schema.ReasonConnected || r.Node != node || r.Type != typ || r.Group != group || r.At == 0 {
			return fmt.Errorf("record %+v, want %s connected on %s as %s/%s", r, sn, node, typ, group)
		}
	}
	return nil
}

func TestOnline(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	url := ns.ClientURL()

	// No node has run: no bucket, nobody online, and none created.
	if out := ok(t, hubctl("online", "--nats-url", url)); out != "" {
		t.Fatalf("online without a bucket: %q", out)
	}

	// Registered before the node starts, so it knows them at once.
	ok(t, hubctl("device", "add", "R-2", "--type", "dog", "--group", "g1", "--nats-url", url))
	ok(t, hubctl("device", "add", "R-1", "--type", "cat", "--group", "g2", "--nats-url", url))
	n := hubtest.StartNode(t, ns, "n1", func(h *hub.Config, _ *node.Config) { h.OfflineGrace = 300 * time.Millisecond })
	if out := ok(t, hubctl("online", "--nats-url", url)); out != "" {
		t.Fatalf("online before any device: %q", out)
	}

	before := time.Now().Truncate(time.Second)
	d2 := hubtest.Device(t, n, "R-2", "other")
	d1 := hubtest.Device(t, n, "R-1", "other")
	after := time.Now()
	var out string
	natstest.Eventually(t, 5*time.Second, func() error {
		out = ok(t, hubctl("online", "--nats-url", url))
		if strings.Count(out, "\n") != 2 {
			return fmt.Errorf("online %q", out)
		}
		return nil
	})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, want := range []string{"R-1 cat g2 n1", "R-2 dog g1 n1"} {
		fields := strings.Fields(lines[i])
		if len(fields) != 5 || strings.Join(fields[:4], " ") != want || lines[i] != strings.Join(fields, " ") {
			t.Fatalf("line %d %q, want %q SINCE", i, lines[i], want)
		}
		since, err := time.Parse(time.RFC3339, fields[4])
		if err != nil || !strings.HasSuffix(fields[4], "Z") {
			t.Fatalf("SINCE %q is not RFC 3339 in UTC: %v", fields[4], err)
		}
		if since.Before(before) || since.After(after) {
			t.Fatalf("SINCE %v, want between %v and %v", since, before, after)
		}
	}

	_ = d1.Conn.Close()
	_ = d2.Conn.Close()
	natstest.Eventually(t, 10*time.Second, func() error {
		if out := ok(t, hubctl("online", "--nats-url", url)); out != "" {
			return fmt.Errorf("still online: %q", out)
		}
		return nil
	})
}

// TestOnlineEntries checks online against hand-written entries: the
// fallback to the registry for entries without type and group, and an
// entry that does not decode.
func TestOnlineEntries(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	url := ns.ClientURL()
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if out := ok(t, hubctl("online", "--nats-url", url)); out != "" {
		t.Fatalf("online without a bucket: %q", out)
	}
	if _, err := js.KeyValue(ctx, schema.BucketPresence); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("online left a bucket behind, or failed: %v", err)
	}

	presence, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schema.BucketPresence})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, v any) {
		t.Helper()
		b, ok := v.([]byte)
		if !ok {
			b, _ = json.Marshal(v)
		}
		if _, err := presence.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("x", 3600))
	entry := func(node string, typ, group string) schema.PresenceEntry {
		return schema.PresenceEntry{Node: node, Session: "s", Since: since.UnixMilli(), LastSeen: since.UnixMilli(), Addr: "10.0.0.1:1", Type: typ, Group: group}
	}
	put("C-3", entry("n2", "", ""))                     // registered: type and group from the registry
	put("A-1", entry("n1", "dog", "g1"))                // a current entry
	put("B-2", entry("n1", "", ""))                     // old and unregistered (no registry bucket yet)
	put("D-4", entry("n2", "robo", ""))                 // only the group is missing
	put("E-5", entry("n1", "", "g5"))                   // only the type is missing, and unregistered
	if err := presence.Delete(ctx, "E-5"); err != nil { // gone: not listed
		t.Fatal(err)
	}
	const at = "2024-05-06T06:08:09Z"
	if out := ok(t, hubctl("online", "--nats-url", url)); out != "A-1 dog g1 n1 "+at+"\nB-2 - - n1 "+at+"\nC-3 - - n2 "+at+"\nD-4 robo - n2 "+at+"\n" {
		t.Fatalf("online %q", out)
	}

	ok(t, hubctl("device", "add", "C-3", "--type", "cat", "--group", "g3", "--nats-url", url))
	ok(t, hubctl("device", "add", "D-4", "--type", "other", "--group", "g4", "--nats-url", url))
	put("E-5", entry("", "", "g5"))
	if out := ok(t, hubctl("online", "--nats-url", url)); out != "A-1 dog g1 n1 "+at+"\nB-2 - - n1 "+at+"\nC-3 cat g3 n2 "+at+"\nD-4 robo g4 n2 "+at+"\nE-5 - g5 - "+at+"\n" {
		t.Fatalf("online with the registry %q", out)
	}

	put("B-3", []byte("not json"))
	line := failed(t, hubctl("online", "--nats-url", url), 1)
	if !strings.HasPrefix(line, "hubctl: ") || !strings.Contains(line, "key B-3 ") {
		t.Fatalf("stderr %q does not name the key", line)
	}
}

func TestTailPresence(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	tr := startTail(t, "tail", "presence", "--nats-url", ns.ClientURL())
	waitTailSub(t, ns, tr, subjects.AllPresence)

	hubtest.Device(t, n, "T-1", "dog")
	natstest.Eventually(t, 5*time.Second, func() error {
		tr.exited(t)
		recs, err := presenceLines(tr.out.String())
		if err != nil {
			return err
		}
		return connectedOnce(recs, "n1", "dog", "default", "T-1")
	})
	if r := tr.stop(t); r.code != 0 || r.stderr != "" {
		t.Fatalf("interrupted tail: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestTailSince checks that --since replays a record published before tail
// started and goes on live from there, printing nothing twice.
func TestTailSince(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}

	hubtest.Device(t, n, "S-1", "dog")
	natstest.Eventually(t, 5*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, schema.StreamPresence)
		if err != nil {
			return err
		}
		if info, err := s.Info(ctx); err != nil || info.State.Msgs == 0 {
			return fmt.Errorf("S-1's record not stored yet (%v)", err)
		}
		return nil
	})

	tr := startTail(t, "tail", "--since", "1h", "presence", "--nats-url", ns.ClientURL())
	natstest.Eventually(t, 5*time.Second, func() error {
		tr.exited(t)
		recs, err := presenceLines(tr.out.String())
		if err != nil {
			return err
		}
		return connectedOnce(recs, "n1", "dog", "default", "S-1")
	})
	hubtest.Device(t, n, "S-2", "dog")
	natstest.Eventually(t, 5*time.Second, func() error {
		tr.exited(t)
		recs, err := presenceLines(tr.out.String())
		if err != nil {
			return err
		}
		return connectedOnce(recs, "n1", "dog", "default", "S-1", "S-2")
	})
	if r := tr.stop(t); r.code != 0 || r.stderr != "" {
		t.Fatalf("interrupted tail: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestTailRecords follows status and event records where their streams do
// not exist: --since has nothing to replay and tail goes live. A body that
// is not JSON is skipped.
func TestTailRecords(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	url := ns.ClientURL()
	status := startTail(t, "tail", "status", "--since", "10m", "--nats-url", url)
	events := startTail(t, "tail", "event", "--nats-url", url)
	waitTailSub(t, ns, status, subjects.AllDeviceStatus)
	waitTailSub(t, ns, events, subjects.AllDeviceEvents)

	nc := natstest.Connect(t, ns)
	for _, m := range []struct{ subject, body string }{
		{"hub.dev.X-1.status", "not json"},
		{"hub.dev.X-1.status", ""},
		{"hub.dev.X-1.event", `{"a":1} {"b":2}`},
		{"hub.dev.X-1.status", "{ \"sn\" : \"X-1\",\n \"values\": [1, 2] }"},
		{"hub.dev.X-1.event", ` {"sn":"X-1", "event":"fell"} `},
		{"hub.dev.X-1.push", `{"other":true}`},
	} {
		if err := nc.Publish(m.subject, []byte(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tr   *tailRun
		want string
	}{
		{status, `{"sn":"X-1","values":[1,2]}` + "\n"},
		{events, `{"sn":"X-1","event":"fell"}` + "\n"},
	} {
		natstest.Eventually(t, 5*time.Second, func() error {
			tc.tr.exited(t)
			if out := tc.tr.out.String(); out != tc.want {
				return fmt.Errorf("printed %q, want %q", out, tc.want)
			}
			return nil
		})
		if r := tc.tr.stop(t); r.code != 0 || r.stderr != "" || r.stdout != tc.want {
			t.Fatalf("interrupted tail: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	}
}

func TestOnlineTailUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"online", "extra"},
		{"online", "--since", "1h"},
		{"tail"},
		{"tail", "weather"},
		{"tail", "presence", "status"},
		{"tail", "presence", "--since", "-1m"},
		{"tail", "presence", "--since", "soon"},
	} {
		args := append([]string{"--nats-url", unreachable}, args...)
		if line := failed(t, hubctl(args...), 2); !strings.HasPrefix(line, "hubctl: ") {
			t.Errorf("%q: stderr %q lacks the hubctl: prefix", args, line)
		}
	}
	// Unlike a usage error, NATS being down is a runtime failure, for tail
	// too, which must not wait forever for it.
	failed(t, hubctl("tail", "presence", "--nats-url", unreachable), 1)
	failed(t, hubctl("online", "--nats-url", unreachable), 1)
}

func TestDeviceShow(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	url := ns.ClientURL()
	dev := hubtest.Device(t, n, "SH-1", "retail")
	dev.MustOK("/device/status", map[string]any{"electricity": map[string]any{"code": 0, "msg": "", "percent": 55}})
	var out, errb bytes.Buffer
	if code := run([]string{"device", "show", "SH-1", "--nats-url", url}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got struct {
		SN, Type, Group    string
		Registered, Online bool
		Presence           *schema.PresenceEntry
		Status             map[string]any
		StatusAt           *int64 `json:"status_at"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if got.SN != "SH-1" || got.Registered || !got.Online || got.Presence == nil || got.Presence.Node != "n1" || got.Type != "retail" || got.StatusAt == nil {
		t.Fatalf("show %s", out.String())
	}
	if got.Status["electricity"].(map[string]any)["percent"].(float64) != 55 {
		t.Fatalf("status %v", got.Status)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"device", "show", "NOBODY", "--nats-url", url}, &out, &errb); code != 1 || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("unknown device: exit %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"device", "show", "--nats-url", url}, &out, &errb); code != 2 {
		t.Fatalf("missing SN: exit %d", code)
	}
}
