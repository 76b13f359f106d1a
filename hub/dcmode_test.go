package hub_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/node"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Data-centre mode on the in-process server, with Config.DC forced: the
// names, the own stores and aggregates, and the fleet seen from any data
// centre (docs/topologies.md, "Several data centres: layout").

// inDC is the option of a node of data centre dc, with short liveness
// and grace so that a killed node's devices are reported in seconds.
func inDC(dc string) hubtest.Option {
	return func(h *hub.Config, _ *node.Config) {
		h.DC = dc
		h.NodeTTL, h.OfflineGrace, h.PresenceTTL = time.Second, 500*time.Millisecond, 10*time.Second
		h.SummaryInterval = 200 * time.Millisecond
	}
}

// liveRecords collects what a backend subscriber of subject receives.
type liveRecords struct{ sub *nats.Subscription }

func subscribeRecords(t *testing.T, nc *nats.Conn, subject string) liveRecords {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return liveRecords{sub}
}

// await returns the first message on the subscription for which match
// holds, waiting at most 10 s.
func (l liveRecords) await(t *testing.T, what string, match func(m *nats.Msg) bool) *nats.Msg {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := l.sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("%s: no such message on %s: %v", what, l.sub.Subject, err)
		}
		if match(m) {
			return m
		}
	}
}

// presenceIs matches a presence record of sn saying online, with reason.
func presenceIs(sn string, online bool, reason schema.Reason) func(*nats.Msg) bool {
	return func(m *nats.Msg) bool {
		var r schema.PresenceRecord
		return json.Unmarshal(m.Data, &r) == nil && r.SN == sn && r.Online == online && r.Reason == reason
	}
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return st.CachedInfo().Config
}

func sourceNames(cfg jetstream.StreamConfig) []string {
	var out []string
	for _, s := range cfg.Sources {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// checkViews checks the aggregates of the §6 names: sourcing exactly
// sources (KV_ or stream names of the data centres' own), with no TTL of
// their own, readable by direct get.
func checkViews(t *testing.T, js jetstream.JetStream, dcs ...string) {
	t.Helper()
	for view, own := range map[string]func(dc string) string{
		"KV_" + schema.BucketPresence: func(dc string) string { return "KV_" + schema.Layout{DC: dc}.Presence() },
		"KV_" + schema.BucketNodes:    func(dc string) string { return "KV_" + schema.Layout{DC: dc}.Nodes() },
		schema.StreamStatus:           func(dc string) string { return schema.Layout{DC: dc}.StatusStream() },
		schema.StreamEvents:           func(dc string) string { return schema.Layout{DC: dc}.EventStream() },
		schema.StreamPresence:         func(dc string) string { return schema.Layout{DC: dc}.PresenceStream() },
	} {
		cfg := streamConfig(t, js, view)
		var want []string
		for _, dc := range dcs {
			want = append(want, own(dc))
		}
		slices.Sort(want)
		if got := sourceNames(cfg); !slices.Equal(got, want) {
			t.Errorf("view %s sources %v, want %v", view, got, want)
		}
		if cfg.MaxAge != 0 || cfg.AllowMsgTTL || cfg.SubjectDeleteMarkerTTL != 0 || !cfg.AllowDirect {
			t.Errorf("view %s: MaxAge %v, AllowMsgTTL %v, marker TTL %v, AllowDirect %v; want no TTL of its own, direct gets",
				view, cfg.MaxAge, cfg.AllowMsgTTL, cfg.SubjectDeleteMarkerTTL, cfg.AllowDirect)
		}
		if !strings.HasPrefix(view, "KV_") && len(cfg.Subjects) != 0 {
			t.Errorf("record view %s captures %v, want no subjects of its own", view, cfg.Subjects)
		}
	}
}

// TestDCModeOneDataCentre runs two nodes of data centre "east": the own
// stores and the aggregates exist with the layout's names and configs,
// and everything a device and an admin do works through them: connect,
// auth, status, event, presence records (seen live on the §6 subjects),
// listings, history, summary, and node_lost for a killed node's device.
func TestDCModeOneDataCentre(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	a := hubtest.StartNode(t, ns, "east-a", inDC("east"))
	b := hubtest.StartNode(t, ns, "east-b", inDC("east"))
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if l := a.Hub.Layout(); l.DC != "east" || !l.DCMode() {
		t.Fatalf("layout %+v, want data centre east", l)
	}
	if len(a.Hub.DCViews()) != 6 {
		t.Fatalf("%d views, want 6", len(a.Hub.DCViews()))
	}

	// The own stores, and no store under a classic name but the registry.
	for _, name := range []string{
		"KV_hub_presence_east", "KV_hub_nodes_east", "KV_hub_node_devices_east", "KV_hub_roles_east",
		"KV_hub_nonces_east", "HUB_STATUS_east", "HUB_EVENTS_east", "HUB_PRESENCE_east",
		"KV_hub_devices", "KV_hub_users",
	} {
		streamConfig(t, js, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, classic := range []string{"KV_hub_nonces", "KV_hub_roles", "KV_hub_node_devices"} {
		if _, err := js.Stream(ctx, classic); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %s: %v, want none in data-centre mode", classic, err)
		}
	}
	status := streamConfig(t, js, "HUB_STATUS_east")
	if status.Subjects[0] != "hub.dc.east.dev.*.status" || status.RePublish == nil || status.RePublish.Destination != "hub.dev.{{wildcard(1)}}.status" {
		t.Errorf("HUB_STATUS_east: subjects %v, republish %+v", status.Subjects, status.RePublish)
	}
	checkViews(t, js, "east")
	seen := streamConfig(t, js, "KV_hub_nonces_seen_east")
	if len(seen.Sources) != 0 || seen.MaxAge == 0 {
		t.Errorf("hub_nonces_seen_east: sources %v, MaxAge %v; want none of its own data centre, the replay window", sourceNames(seen), seen.MaxAge)
	}

	// A device on east-b; backends see its records live on the §6
	// subjects, and its entry in hub_presence.
	liveStatus := subscribeRecords(t, nc, "hub.dev.*.status")
	liveEvents := subscribeRecords(t, nc, "hub.dev.*.event")
	livePresence := subscribeRecords(t, nc, "hub.presence.*")
	adm := hubtest.Admin(t, a, "admin", hubtest.AdminPassword)
	adm.MustOK("/admin/subscribe", map[string]any{"all": true, "topics": []string{"presence", "status", "event", "summary"}})
	dev := hubtest.Device(t, b, "E-1", "retail")
	livePresence.await(t, "connected record", presenceIs("E-1", true, schema.ReasonConnected))
	presenceView, err := js.KeyValue(ctx, schema.BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		e, err := presenceView.Get(ctx, "E-1")
		if err != nil {
			return err
		}
		var pe schema.PresenceEntry
		if err := json.Unmarshal(e.Value(), &pe); err != nil || pe.Node != "east-b" {
			return fmt.Errorf("entry %s", e.Value())
		}
		return nil
	})
	adm.Push("/push/presence")

	dev.MustOK("/device/status", map[string]any{"location": map[string]any{"code": 0, "msg": "dock"}})
	liveStatus.await(t, "status record", func(m *nats.Msg) bool { return m.Subject == "hub.dev.E-1.status" })
	dev.MustOK("/device/event", map[string]any{"event": "abnormal", "priority": "high", "data": map[string]any{"x": 1}})
	liveEvents.await(t, "event record", func(m *nats.Msg) bool { return m.Subject == "hub.dev.E-1.event" })
	adm.Push("/push/status")
	// Push ids of stored records name the data centre: every own stream
	// counts from 1.
	if p := adm.Push("/push/event"); !strings.HasPrefix(p.ID, "e") || !strings.HasSuffix(p.ID, "-east") {
		t.Errorf("event push id %q, want e<seq>-east", p.ID)
	}

	// Listings, history and summary read the aggregates.
	natstest.Eventually(t, 5*time.Second, func() error {
		var list struct {
			Devices []schema.DeviceView `json:"devices"`
		}
		adm.MustOK("/admin/devices", map[string]any{}).Decode(t, &list)
		if len(list.Devices) != 1 || list.Devices[0].SN != "E-1" || !list.Devices[0].Online || list.Devices[0].StatusAt == nil {
			return fmt.Errorf("listing %+v", list.Devices)
		}
		return nil
	})
	for topic, want := range map[string]int{"status": 1, "event": 1, "presence": 1} {
		natstest.Eventually(t, 5*time.Second, func() error {
			var h struct {
				Records []json.RawMessage `json:"records"`
			}
			adm.MustOK("/admin/history", map[string]any{"sn": "E-1", "topic": topic}).Decode(t, &h)
			if len(h.Records) != want {
				return fmt.Errorf("%s history: %d records, want %d", topic, len(h.Records), want)
			}
			return nil
		})
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		var sum schema.Summary
		adm.Push("/push/summary").Decode(t, &sum)
		if sum.Online != 1 {
			return fmt.Errorf("summary %+v", sum)
		}
		return nil
	})

	// east-b dies: east-a reports its device lost, in east's own stream.
	b.NC.Close()
	_ = dev.Conn.Close()
	livePresence.await(t, "node_lost record", presenceIs("E-1", false, schema.ReasonNodeLost))
	own, err := js.Stream(ctx, "HUB_PRESENCE_east")
	if err != nil {
		t.Fatal(err)
	}
	m, err := own.GetLastMsgForSubject(ctx, "hub.dc.east.presence.E-1")
	if err != nil || !presenceIs("E-1", false, schema.ReasonNodeLost)(&nats.Msg{Data: m.Data}) {
		t.Fatalf("last record in HUB_PRESENCE_east: %v %v", m, err)
	}
}

// crossSourced waits for the data centre engine of nodes of different
// data centres sharing one JetStream to make every view of each source
// every data centre (but its own, for the nonces seen): the engines learn
// the others from their announces.
func crossSourced(t *testing.T, js jetstream.JetStream, nodes ...*hubtest.Node) {
	t.Helper()
	natstest.Eventually(t, 20*time.Second, func() error {
		for _, n := range nodes {
			for _, v := range n.Hub.DCViews() {
				got := sourceNames(streamConfig(t, js, v.Config.Name))
				for _, m := range nodes {
					dc := m.Hub.Layout().DC
					if v.OthersOnly && dc == n.Hub.Layout().DC {
						continue
					}
					if want := v.Source(dc, "").Name; !slices.Contains(got, want) {
						return fmt.Errorf("view %s sources %v, not yet %s", v.Config.Name, got, want)
					}
				}
			}
		}
		return nil
	})
}

// TestDCModeTwoDataCentres runs data centres east and west on one server,
// as a supercluster shares one JetStream; the data centre engines add each
// one's sources to the other's aggregates: a device of west is
// listed, its history read and commanded from east; a nonce used in west
// is refused in east once its claim has arrived; a west node killed is
// reported node_lost by west's node alone.
func TestDCModeTwoDataCentres(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	east := hubtest.StartNode(t, ns, "east-a", inDC("east"))
	west := hubtest.StartNode(t, ns, "west-a", inDC("west"))
	westB := hubtest.StartNode(t, ns, "west-b", inDC("west"))
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	crossSourced(t, js, east, west)
	checkViews(t, js, "east", "west")
	for dc, other := range map[string]string{"east": "KV_hub_nonces_west", "west": "KV_hub_nonces_east"} {
		if got := sourceNames(streamConfig(t, js, "KV_hub_nonces_seen_"+dc)); !slices.Equal(got, []string{other}) {
			t.Errorf("hub_nonces_seen_%s sources %v, want [%s]", dc, got, other)
		}
	}

	// A device of west, seen from east.
	livePresence := subscribeRecords(t, nc, "hub.presence.*")
	dev := hubtest.Device(t, westB, "W-1", "retail")
	dev.MustOK("/device/status", map[string]any{"rubbish": map[string]any{"code": 0, "msg": "empty"}})
	adm := hubtest.Admin(t, east, "admin", hubtest.AdminPassword)
	natstest.Eventually(t, 5*time.Second, func() error {
		var list struct {
			Devices []schema.DeviceView `json:"devices"`
		}
		adm.MustOK("/admin/devices", map[string]any{}).Decode(t, &list)
		if len(list.Devices) != 1 || list.Devices[0].SN != "W-1" || !list.Devices[0].Online || list.Devices[0].Node != "west-b" {
			return fmt.Errorf("east lists %+v", list.Devices)
		}
		return nil
	})
	natstest.Eventually(t, 5*time.Second, func() error {
		var h struct {
			Records []schema.StatusRecord `json:"records"`
		}
		adm.MustOK("/admin/history", map[string]any{"sn": "W-1", "topic": "status"}).Decode(t, &h)
		if len(h.Records) != 1 || !strings.Contains(string(h.Records[0].Status), "empty") {
			return fmt.Errorf("east reads W-1's status history %+v", h.Records)
		}
		return nil
	})
	go func() {
		req := dev.Next(func(m hubtest.Msg) bool { return m.Op == "request" && m.Service == "/cmd/fetch" })
		dev.Send(`{"op":"response","request_id":"` + req.RequestID + `","code":0,"result":true,"values":{"ok":"west"}}`)
	}()
	if res := adm.MustOK("/admin/command", map[string]any{"sn": "W-1", "service": "/cmd/fetch", "timeout_ms": 3000}); string(res.Values) != `{"ok":"west"}` {
		t.Fatalf("command from east: %s", res.Raw)
	}

	// A nonce claimed in west is a replay in east once its claim is in
	// hub_nonces_seen_east.
	args := hubtest.DeviceArgs("W-2", "retail")
	used := time.Now()
	hubtest.Dial(t, west.WSURL(), nil).MustOK("/auth/device", args)
	seenEast, err := js.KeyValue(ctx, "hub_nonces_seen_east")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(args["nonce"].(string)))
	natstest.Eventually(t, time.Second, func() error {
		_, err := seenEast.Get(ctx, hex.EncodeToString(sum[:16]))
		return err
	})
	t.Logf("west's nonce claim in east's seen bucket after %v", time.Since(used).Round(time.Millisecond))
	replay := hubtest.Dial(t, east.WSURL(), nil).Request("/auth/device", args)
	if replay.Code != 401 || !strings.Contains(replay.Msg, "replay") {
		t.Fatalf("nonce of west used in east: %s, want 401 replay", replay.Raw)
	}

	// west-b dies: west-a reports W-1 lost; east judges nothing (its
	// node liveness is hub_nodes_east alone).
	westB.NC.Close()
	_ = dev.Conn.Close()
	lost := livePresence.await(t, "node_lost record", presenceIs("W-1", false, schema.ReasonNodeLost))
	if lost.Header.Get("Nats-Stream") != "HUB_PRESENCE_west" {
		t.Errorf("node_lost stored by %q, want HUB_PRESENCE_west", lost.Header.Get("Nats-Stream"))
	}
	eastOwn, err := js.Stream(ctx, "HUB_PRESENCE_east")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := eastOwn.GetLastMsgForSubject(ctx, "hub.dc.east.presence.W-1"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("east recorded W-1: %v %v", m, err)
	}
	nodesEast, err := js.KeyValue(ctx, "hub_nodes_east")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodesEast.Get(ctx, "west-a"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("west-a in hub_nodes_east: %v", err)
	}
	// The fleet's presence history of W-1, as east reads it: connected,
	// then node_lost, once.
	natstest.Eventually(t, 5*time.Second, func() error {
		var h struct {
			Records []schema.PresenceRecord `json:"records"`
		}
		adm.MustOK("/admin/history", map[string]any{"sn": "W-1", "topic": "presence"}).Decode(t, &h)
		if len(h.Records) != 2 || h.Records[0].Reason != schema.ReasonNodeLost || h.Records[1].Reason != schema.ReasonConnected {
			return fmt.Errorf("W-1's presence history from east: %+v", h.Records)
		}
		return nil
	})
}

// TestDCModeClassicStoreLeft starts a node in data-centre mode on a
// JetStream where a node in classic mode left its buckets: JetStream
// cannot turn the classic hub_presence (message TTLs) into an aggregate,
// and the start fails with an error that says so and how to fix it.
func TestDCModeClassicStoreLeft(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	classic := hubtest.StartNode(t, ns, "classic")
	if classic.Hub.Layout().DCMode() {
		t.Fatalf("a node on a standalone server runs in classic mode, not %+v", classic.Hub.Layout())
	}
	hubtest.Device(t, classic, "U-1", "retail")
	srv, err := hub.New(hub.Config{Conn: natstest.Connect(t, ns), NodeID: "dc", MasterSecret: hubtest.MasterSecret, BcryptCost: 4, DC: "east"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = srv.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "left by a node in classic mode") || !strings.Contains(err.Error(), "KV_hub_presence") {
		t.Fatalf("start over classic stores: %v, want the classic hub_presence named", err)
	}
	_ = srv.Shutdown(ctx)
}

// TestDCModeJetStreamDomain runs nodes on a server whose JetStream has a
// domain, as a leaf-node site's does: one node given --js-domain, one
// finding the domain in the account's JetStream info. Both take the
// domain as their data centre, and every JetStream call (creates, direct
// gets of listings and history, the tracker's publishes) goes through it.
func TestDCModeJetStreamDomain(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, JetStreamDomain: "edge", StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	given := hubtest.StartNode(t, ns, "edge-a", func(h *hub.Config, _ *node.Config) { h.JSDomain = "edge" })
	found := hubtest.StartNode(t, ns, "edge-b")
	for _, n := range []*hubtest.Node{given, found} {
		if l := n.Hub.Layout(); l.DC != "edge" || l.Domain != "edge" || l.Cluster != "" {
			t.Fatalf("%s: layout %+v, want data centre and domain edge", n.Hub.NodeID(), l)
		}
	}
	dev := hubtest.Device(t, found, "L-1", "retail")
	dev.MustOK("/device/status", map[string]any{"electricity": map[string]any{"code": 0, "msg": "full"}})
	adm := hubtest.Admin(t, given, "admin", hubtest.AdminPassword)
	natstest.Eventually(t, 5*time.Second, func() error {
		var list struct {
			Devices []schema.DeviceView `json:"devices"`
		}
		adm.MustOK("/admin/devices", map[string]any{}).Decode(t, &list)
		if len(list.Devices) != 1 || !list.Devices[0].Online || list.Devices[0].StatusAt == nil {
			return fmt.Errorf("listing %+v", list.Devices)
		}
		var h struct {
			Records []json.RawMessage `json:"records"`
		}
		adm.MustOK("/admin/history", map[string]any{"sn": "L-1", "topic": "status"}).Decode(t, &h)
		if len(h.Records) != 1 {
			return fmt.Errorf("history %d records", len(h.Records))
		}
		return nil
	})
}

// TestDCModeDeviceMoves moves devices from east to west: one whose
// session closed and that dialled west within its grace, one that dialled
// west while its east session was open (replaced), one whose east node
// died. East removes their entries without an offline record (it
// finds them online in west in hub_presence), west writes its entries
// again once east's removal has reached hub_presence, and from east the
// devices are listed online in west.
func TestDCModeDeviceMoves(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	// Entries are refreshed rarely (the default TTL): the entry written
	// again after a move is not a refresh by chance.
	rare := func(h *hub.Config, _ *node.Config) { h.PresenceTTL = 2 * time.Minute }
	eastA := hubtest.StartNode(t, ns, "east-a", inDC("east"), rare)
	eastB := hubtest.StartNode(t, ns, "east-b", inDC("east"), rare)
	west := hubtest.StartNode(t, ns, "west-a", inDC("west"), rare)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	crossSourced(t, js, eastA, west)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	eastEntries, err := js.KeyValue(ctx, "hub_presence_east")
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := js.KeyValue(ctx, schema.BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	eastRecords, err := js.Stream(ctx, "HUB_PRESENCE_east")
	if err != nil {
		t.Fatal(err)
	}
	closing := hubtest.Device(t, eastB, "M-1", "retail")
	replaced := hubtest.Device(t, eastB, "M-2", "retail")
	dying := hubtest.Device(t, eastB, "M-3", "retail")
	adm := hubtest.Admin(t, eastA, "admin", hubtest.AdminPassword)
	// moved checks that sn, which went to west, has no offline record in
	// east and is online in west in hub_presence.
	moved := func(sn string) {
		t.Helper()
		// East's entry goes once the grace (or the loss) is over; by
		// then east has decided on its record.
		natstest.Eventually(t, 15*time.Second, func() error {
			if _, err := eastEntries.Get(ctx, sn); !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("%s still in hub_presence_east: %v", sn, err)
			}
			return nil
		})
		m, err := eastRecords.GetLastMsgForSubject(ctx, "hub.dc.east.presence."+sn)
		if err != nil || !presenceIs(sn, true, schema.ReasonConnected)(&nats.Msg{Data: m.Data}) {
			t.Errorf("%s: east's last record %s (%v), want its connected one: it went online in west", sn, m.Data, err)
		}
		natstest.Eventually(t, 10*time.Second, func() error {
			e, err := fleet.Get(ctx, sn)
			if err != nil {
				return fmt.Errorf("%s in hub_presence: %w", sn, err)
			}
			var pe schema.PresenceEntry
			if err := json.Unmarshal(e.Value(), &pe); err != nil || pe.Node != "west-a" {
				return fmt.Errorf("%s in hub_presence: %s", sn, e.Value())
			}
			return nil
		})
	}

	// M-1 closes its session in east and dials west at once; M-2 dials
	// west while its east session is open (replaced).
	_ = closing.Conn.Close()
	hubtest.Device(t, west, "M-1", "retail")
	hubtest.Device(t, west, "M-2", "retail")
	if code := replaced.Closed(5 * time.Second); code != 4001 {
		t.Fatalf("M-2's east session closed with %d, want 4001", code)
	}
	moved("M-1")
	moved("M-2")
	// east-b dies, and M-3 dials west.
	eastB.NC.Close()
	_ = dying.Conn.Close()
	hubtest.Device(t, west, "M-3", "retail")
	moved("M-3")
	natstest.Eventually(t, 5*time.Second, func() error {
		var list struct {
			Devices []schema.DeviceView `json:"devices"`
		}
		adm.MustOK("/admin/devices", map[string]any{}).Decode(t, &list)
		for _, d := range list.Devices {
			if !d.Online || d.Node != "west-a" {
				return fmt.Errorf("east lists %+v", list.Devices)
			}
		}
		if len(list.Devices) != 3 {
			return fmt.Errorf("east lists %+v", list.Devices)
		}
		return nil
	})
}
