package dcs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testKey signs the tests' announces as the hub's control key does.
var testKey = auth.ControlKey([]byte("dcs test master secret"))

// sign signs m over its subject, as the hub signs control messages.
func sign(m *nats.Msg) { signWith(testKey, m) }

func signWith(key []byte, m *nats.Msg) {
	at := time.Now().UnixMilli()
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(schema.HeaderSigAt, strconv.FormatInt(at, 10))
	m.Header.Set(schema.HeaderSig, auth.SignControl(key, m.Subject, at, m.Data))
}

var errBadSig = errors.New("bad signature")

func verify(m *nats.Msg) error {
	at, err := strconv.ParseInt(m.Header.Get(schema.HeaderSigAt), 10, 64)
	if err != nil || !auth.VerifyControl(testKey, m.Subject, at, m.Data, m.Header.Get(schema.HeaderSig)) {
		return errBadSig
	}
	if d := time.Since(time.UnixMilli(at)); d > 30*time.Second || d < -30*time.Second {
		return errBadSig
	}
	return nil
}

// The tests' views, shaped like the hub's: a KV view "t" of the data
// centres' own buckets t_<dc>, and a record stream view "T" of their own
// streams T_<dc> on t.dc.<dc>.x.*, moved to t.x.*.
func ownBucket(dc string) string  { return "t_" + dc }
func ownStream(dc string) string  { return "T_" + dc }
func ownSubject(dc string) string { return "t.dc." + dc + ".x.*" }

func testViews(placement *jetstream.Placement) []View {
	return []View{
		KeyValueView(jetstream.KeyValueConfig{Bucket: "t", Placement: placement}, ownBucket, false),
		StreamView(jetstream.StreamConfig{Name: "T", MaxMsgsPerSubject: 10, Placement: placement}, ownStream, ownSubject, "t.x.{{wildcard(1)}}"),
	}
}

// own creates data centre dc's own bucket and stream in js.
func own(t *testing.T, ctx context.Context, js jetstream.JetStream, dc string, placement *jetstream.Placement) jetstream.KeyValue {
	t.Helper()
	var kv jetstream.KeyValue
	natstest.Eventually(t, 60*time.Second, func() error {
		var err error
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ownBucket(dc), Placement: placement})
		return err
	})
	natstest.Eventually(t, 60*time.Second, func() error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ownStream(dc), Subjects: []string{ownSubject(dc)}, Placement: placement})
		return err
	})
	return kv
}

// start runs an engine for dc on nc/js, stopped when the test ends.
func start(t *testing.T, ctx context.Context, cfg Config) *Engine {
	t.Helper()
	if cfg.Sign == nil {
		cfg.Sign, cfg.Verify = sign, verify
	}
	if cfg.Interval == 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.Log == nil && testing.Verbose() {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", cfg.Node)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	e, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start engine %s/%s: %v", cfg.DC, cfg.Node, err)
	}
	t.Cleanup(e.Stop)
	return e
}

// dcState returns the engine's view of data centre name.
func (e *Engine) dc(name string) (DC, bool) {
	for _, d := range e.DCs() {
		if d.Name == name {
			return d, true
		}
	}
	return DC{}, false
}

// present is a condition: e knows name and has heard it recently (or,
// want false, it does not).
func present(e *Engine, name string, want bool) func() error {
	return func() error {
		d, ok := e.dc(name)
		if !ok {
			return fmt.Errorf("%s does not know %s", e.cfg.DC, name)
		}
		if d.Present != want {
			return fmt.Errorf("%s sees %s present=%v", e.cfg.DC, name, d.Present)
		}
		return nil
	}
}

func kicks(e *Engine, dc string) float64 { return testutil.ToFloat64(e.m.kicks.WithLabelValues(dc)) }

func refused(e *Engine, reason string) float64 {
	return testutil.ToFloat64(e.m.refused.WithLabelValues(reason))
}

// announceAs publishes one signed announce for a data centre on nc.
func announceAs(t *testing.T, nc *nats.Conn, h hello) {
	t.Helper()
	if err := publishHello(nc, h); err != nil {
		t.Fatal(err)
	}
}

func publishHello(nc *nats.Conn, h hello) error {
	body, _ := json.Marshal(h)
	m := &nats.Msg{Subject: subjects.DCHello, Data: body}
	sign(m)
	return nc.PublishMsg(m)
}

// sources returns the names of view's source streams.
func sourceNames(t *testing.T, ctx context.Context, js jetstream.JetStream, view string) []string {
	t.Helper()
	st, err := js.Stream(ctx, view)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range st.CachedInfo().Config.Sources {
		out = append(out, s.Name)
	}
	return out
}

// has is a condition: kv holds every key.
func has(ctx context.Context, kv jetstream.KeyValue, keys ...string) func() error {
	return func() error {
		for _, k := range keys {
			if _, err := kv.Get(ctx, k); err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
		}
		return nil
	}
}

// hasRecord is a condition: view stream holds a record on subject.
func hasRecord(ctx context.Context, js jetstream.JetStream, view, subject string) func() error {
	return func() error {
		st, err := js.Stream(ctx, view)
		if err != nil {
			return err
		}
		_, err = st.GetLastMsgForSubject(ctx, subject)
		return err
	}
}

// waitFor polls f every 5 ms and returns how long it took to succeed,
// failing the test after d.
func waitFor(t *testing.T, d time.Duration, f func() error) time.Duration {
	t.Helper()
	t0 := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(t0)
		}
		if time.Since(t0) > d {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
