package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyBound is how soon /readyz must follow a change (PROTOCOL §7).
const readyBound = 15 * time.Second

type health struct {
	code    int
	Status  string   `json:"status"`
	Missing []string `json:"missing"`
}

func getHealth(t *testing.T, n *hubtest.Node, path string) health {
	t.Helper()
	resp, err := http.Get(n.Server.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := health{code: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h
}

func jsOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestReadyzNamesMissingStore: /livez answers while the process runs;
// /readyz and /healthz turn 503 while a bucket the node needs is missing
// (here it cannot be created again: a stream of the operator's holds its
// subjects), naming it, within the bound, and 200 again once it could be
// created; and 503 naming nats while the node is cut off.
func TestReadyzNamesMissingStore(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1")
	for _, path := range []string{"/livez", "/readyz", "/healthz"} {
		if h := getHealth(t, n, path); h.code != http.StatusOK {
			t.Fatalf("%s: %d %+v", path, h.code, h)
		}
	}
	nc := natstest.Connect(t, ns)
	js := jsOf(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The bucket goes, and its subjects are taken before the node can
	// create it again (should the node be quicker, it goes again).
	natstest.Eventually(t, 10*time.Second, func() error {
		if err := js.DeleteKeyValue(ctx, schema.BucketNonces); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			return err
		}
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"$KV." + schema.BucketNonces + ".>"}})
		return err
	})
	natstest.Eventually(t, readyBound, func() error {
		h := getHealth(t, n, "/readyz")
		if h.code != http.StatusServiceUnavailable || !slices.Contains(h.Missing, schema.BucketNonces) {
			return fmt.Errorf("/readyz %d %+v", h.code, h)
		}
		return nil
	})
	if h := getHealth(t, n, "/healthz"); h.code != http.StatusServiceUnavailable || !slices.Contains(h.Missing, schema.BucketNonces) {
		t.Fatalf("/healthz with a bucket missing: %d %+v", h.code, h)
	}
	if h := getHealth(t, n, "/livez"); h.code != http.StatusOK {
		t.Fatalf("/livez: %d", h.code)
	}

	if err := js.DeleteStream(ctx, "SQUATTER"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, readyBound, func() error {
		if h := getHealth(t, n, "/readyz"); h.code != http.StatusOK || h.Status != "ready" {
			return fmt.Errorf("/readyz %d %+v", h.code, h)
		}
		return nil
	})
	if _, err := js.Stream(ctx, "KV_"+schema.BucketNonces); err != nil {
		t.Fatalf("bucket not created again: %v", err)
	}
	hubtest.Device(t, n, "RZ-1", "retail").MustOK("/ping", nil)

	n.NC.Close()
	natstest.Eventually(t, readyBound, func() error {
		h := getHealth(t, n, "/readyz")
		if h.code != http.StatusServiceUnavailable || !slices.Contains(h.Missing, "nats") {
			return fmt.Errorf("/readyz %d %+v", h.code, h)
		}
		return nil
	})
	if h := getHealth(t, n, "/livez"); h.code != http.StatusOK {
		t.Fatalf("/livez while cut off: %d", h.code)
	}
}

// TestLoginAfterNoncesDeleted: the replay-protection bucket removed under
// a running node is created again by the first login that finds it gone;
// that login, and the next, succeed; a replay is still refused.
func TestLoginAfterNoncesDeleted(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(h *hub.Config, _ *nodeConfig) { h.StoreCheckInterval = time.Hour })
	js := jsOf(t, natstest.Connect(t, ns))
	if err := js.DeleteKeyValue(ctxT(t), schema.BucketNonces); err != nil {
		t.Fatal(err)
	}
	args := hubtest.DeviceArgs("NZ-1", "retail")
	c := hubtest.Dial(t, n.WSURL(), nil)
	c.MustOK("/auth/device", args)
	hubtest.Device(t, n, "NZ-2", "retail").MustOK("/ping", nil)
	replay := hubtest.Dial(t, n.WSURL(), nil)
	replay.MustCode(401, "/auth/device", args)
}

// TestPresenceBucketHealed removes hub_presence under two running nodes:
// both find it gone, one creates it again (they may both try), each writes
// back the entries of the devices it holds, with no record, and devices
// log in, are listed and go offline as before.
func TestPresenceBucketHealed(t *testing.T) {
	t.Parallel()
	a, b, nc := twoNodes(t, func(h *hub.Config, n *nodeConfig) {
		fastPresence(h, n)
		h.PresenceTTL = time.Minute // no refresh puts an entry back meanwhile
	})
	rec := record(t, nc)
	devA := hubtest.Device(t, a, "PB-a", "retail")
	devB := hubtest.Device(t, b, "PB-b", "retail")
	rec.wait(t, "PB-a", 1, 5*time.Second)
	rec.wait(t, "PB-b", 1, 5*time.Second)
	admin := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)

	js := jsOf(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, hub.BucketPresence); err != nil {
		t.Fatal(err)
	}
	sessions := map[string]string{}
	natstest.Eventually(t, readyBound, func() error {
		kv, err := js.KeyValue(ctx, hub.BucketPresence)
		if err != nil {
			return err
		}
		for sn, node := range map[string]string{"PB-a": "node-a", "PB-b": "node-b"} {
			e, err := kv.Get(ctx, sn)
			if err != nil {
				return fmt.Errorf("%s: %w", sn, err)
			}
			var pe hub.PresenceEntry
			if err := json.Unmarshal(e.Value(), &pe); err != nil || pe.Node != node {
				return fmt.Errorf("%s: entry %s", sn, e.Value())
			}
			sessions[sn] = pe.Session
		}
		return nil
	})
	devA.MustOK("/ping", nil)
	devB.MustOK("/ping", nil)
	for _, n := range []*hubtest.Node{a, b} {
		natstest.Eventually(t, readyBound, func() error {
			if h := getHealth(t, n, "/readyz"); h.code != http.StatusOK {
				return fmt.Errorf("%s /readyz %d %+v", n.Hub.NodeID(), h.code, h)
			}
			return nil
		})
	}
	// New devices log in on either node; the listing shows every device.
	hubtest.Device(t, a, "PB-c", "retail")
	hubtest.Device(t, b, "PB-d", "retail")
	natstest.Eventually(t, 5*time.Second, func() error {
		r := admin.MustOK("/admin/devices", map[string]any{"online": true})
		var list struct{ Devices []hub.DeviceView }
		r.Decode(t, &list)
		if len(list.Devices) != 4 {
			return fmt.Errorf("devices %s", r.Raw)
		}
		return nil
	})
	// The loss made no record; the device that leaves gets its offline.
	_ = devB.Conn.Close()
	off, _ := rec.wait(t, "PB-b", 2, 5*time.Second)
	if off.Online || off.Reason != hub.ReasonClosed {
		t.Fatalf("record %+v", off)
	}
	if recs := rec.of("PB-a"); len(recs) != 1 {
		t.Fatalf("records of PB-a: %+v", recs)
	}
}

// TestStreamsHealed removes HUB_PRESENCE, HUB_STATUS and HUB_EVENTS under
// a running node: they are created again and the node's consumers start
// anew on them, so a subscribed admin keeps getting presence, status and
// event pushes.
func TestStreamsHealed(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	n := hubtest.StartNode(t, ns, "n1", func(h *hub.Config, c *nodeConfig) {
		fastPresence(h, c)
		h.CoalesceWindow = time.Millisecond
	})
	admin := hubtest.Admin(t, n, "admin", hubtest.AdminPassword)
	admin.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence", "status", "event"}})
	dev := hubtest.Device(t, n, "SH-1", "retail")
	admin.Push("/push/presence")

	js := jsOf(t, natstest.Connect(t, ns))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{hub.StreamPresence, hub.StreamStatus, hub.StreamEvents} {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// Each stream was created again (by the check, or by the write that
	// found it gone), with a consumer that delivers what it stores.
	dev.MustOK("/device/event", map[string]any{"event": "abnormal", "priority": "high"})
	dev.MustOK("/device/status", map[string]any{"electricity": map[string]any{"code": 0, "msg": "ok", "percent": 41}})
	admin.Push("/push/event")
	admin.Push("/push/status")
	natstest.Eventually(t, readyBound, func() error {
		if h := getHealth(t, n, "/readyz"); h.code != http.StatusOK {
			return fmt.Errorf("/readyz %d %+v", h.code, h)
		}
		return nil
	})
	other := hubtest.Device(t, n, "SH-2", "retail")
	if p := admin.Push("/push/presence"); !json.Valid(p.Values) {
		t.Fatalf("push %s", p.Raw)
	}
	_ = other.Conn.Close()
	var off hub.PresenceRecord
	admin.Push("/push/presence").Decode(t, &off)
	if off.SN != "SH-2" || off.Online {
		t.Fatalf("presence push %+v", off)
	}
	s, err := js.Stream(ctx, hub.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != 2 {
		t.Fatalf("HUB_PRESENCE holds %d records, want SH-2's connected and offline", got)
	}
}
