package hub

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fleethub/fleethub/hub/dcs"
	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Data centres (docs/topologies.md, "Several data centres: layout").
//
// A node's data centre is Config.DC, else the NATS cluster its
// connection reaches, else its JetStream domain, else none: classic mode,
// where every name is the one of PROTOCOL §6 and nothing here applies.
// In data-centre mode the node writes only its data centre's own stores
// (schema.Layout: hub_presence_<dc>, HUB_STATUS_<dc>, ...) and reads the
// fleet from the aggregates under the §6 names, which source every data
// centre's own. At start it creates each aggregate with its own data
// centre as a source (jscreate.WithSources keeps the sources others
// added), so that one data centre works alone; the data centre engine
// (hub/dcs) adds the others' sources, given DCViews.

// newJetStream is the node's JetStream: that of domain when one is given.
func newJetStream(nc *nats.Conn, domain string, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	if domain != "" {
		return jetstream.NewWithDomain(nc, domain, opts...)
	}
	return jetstream.New(nc, opts...)
}

// resolveLayout finds the node's data centre: cfg.DC, else cluster (the
// connected cluster's name), else the JetStream domain (cfg.JSDomain, else
// domain, the account's as JetStream reports it), else none.
func resolveLayout(cfg Config, cluster, domain string) (schema.Layout, error) {
	if cfg.JSDomain != "" {
		domain = cfg.JSDomain
	}
	l := schema.Layout{DC: cfg.DC, Domain: domain, Cluster: cluster}
	if l.DC == "" {
		l.DC = cluster
	}
	if l.DC == "" {
		l.DC = domain
	}
	if l.DC == "" {
		l.Cluster = "" // classic mode places nothing
	}
	if err := l.Validate(); err != nil {
		return schema.Layout{}, fmt.Errorf("hub: data centre: %w (set Config.DC, --dc)", err)
	}
	return l, nil
}

// Layout is the node's resolved layout: its data centre, JetStream domain
// and cluster, and so the names of its stores. It is the zero Layout
// (classic mode) before Start has succeeded.
func (s *Server) Layout() schema.Layout {
	if !s.started.Load() {
		return schema.Layout{}
	}
	return s.layout
}

// DCViews are the node's aggregates, for the data centre engine (hub/dcs)
// to keep their sources: nil in classic mode and before Start.
func (s *Server) DCViews() []dcs.View {
	l := s.Layout()
	if !l.DCMode() {
		return nil
	}
	return dataCentreViews(l, s.cfg)
}

// logLayout says once, at start, where the node keeps its state.
func (s *Server) logLayout() {
	l := s.layout
	if !l.DCMode() {
		s.log.Info("single data centre (classic names)")
		return
	}
	var names []string
	for _, v := range dataCentreViews(l, s.cfg) {
		names = append(names, v.Config.Name)
	}
	s.log.Info(fmt.Sprintf("data centre %s, domain %q, views %s", l.DC, l.Domain, strings.Join(names, ", ")),
		"dc", l.DC, "domain", l.Domain, "cluster", l.Cluster)
}

// dataCentreViews are the aggregates of layout l (data-centre mode): the
// §6 KV buckets hub_presence and hub_nodes, the §6 streams HUB_STATUS,
// HUB_EVENTS and HUB_PRESENCE, and the nonces claimed elsewhere,
// hub_nonces_seen_<dc>. None has a TTL, a MaxAge or message TTLs: during
// a partition a view keeps the other data centres' state, and their
// expiries reach it as the sources' delete markers. The record views
// keep as many records per device as the own streams do.
func dataCentreViews(l schema.Layout, cfg Config) []dcs.View {
	ownOf := func(dc string) schema.Layout { return schema.Layout{DC: dc} }
	return []dcs.View{
		kvView(schema.BucketPresence, "online devices of every data centre (sources each one's own)", cfg.Replicas, nil,
			func(dc string) string { return ownOf(dc).Presence() }),
		kvView(schema.BucketNodes, "live nodes of every data centre (sources each one's own)", cfg.Replicas, nil,
			func(dc string) string { return ownOf(dc).Nodes() }),
		recordView(schema.StreamStatus, "device status records of every data centre", int64(cfg.StatusHistory), cfg.Replicas,
			func(dc string) (string, string) { return ownOf(dc).StatusStream(), ownOf(dc).StatusSubjects() },
			subjects.Prefix+".dev.{{wildcard(1)}}.status"),
		recordView(schema.StreamEvents, "device event records of every data centre", int64(cfg.EventHistory), cfg.Replicas,
			func(dc string) (string, string) { return ownOf(dc).EventStream(), ownOf(dc).EventSubjects() },
			subjects.Prefix+".dev.{{wildcard(1)}}.event"),
		recordView(schema.StreamPresence, "presence history of every data centre", presenceHistoryPerDevice, cfg.Replicas,
			func(dc string) (string, string) { return ownOf(dc).PresenceStream(), ownOf(dc).PresenceSubjects() },
			subjects.Prefix+".presence.{{wildcard(1)}}"),
		noncesSeenView(l, cfg.Replicas, nonceWindow(cfg)),
	}
}

// presenceHistoryPerDevice is how many presence records HUB_PRESENCE
// keeps per device (as the presence tracker's own stream does).
const presenceHistoryPerDevice = 1000

// kvView is an aggregate KV bucket: the stream KV_<bucket> with the KV
// conventions (so that js.KeyValue(bucket), kv.Get, direct gets and
// watches work on it), sourcing each data centre's own bucket ownOf(dc)
// with the transform of its keys to the bucket's.
func kvView(bucket, desc string, replicas int, placement *jetstream.Placement, ownOf func(dc string) string) dcs.View {
	return dcs.View{
		Config: jetstream.StreamConfig{
			Name: "KV_" + bucket, Description: desc,
			Subjects:          []string{subjects.KVKeys(bucket) + ">"},
			MaxMsgsPerSubject: 1, MaxBytes: -1, MaxMsgs: -1, MaxMsgSize: -1, MaxConsumers: -1,
			Storage: jetstream.FileStorage, Replicas: max(replicas, 1), Placement: placement,
			AllowRollup: true, DenyDelete: true, AllowDirect: true, Discard: jetstream.DiscardNew,
		},
		Source: func(dc, domain string) *jetstream.StreamSource {
			own := ownOf(dc)
			return &jetstream.StreamSource{
				Name: "KV_" + own, Domain: domain,
				SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: subjects.KVKeys(own) + ">", Destination: subjects.KVKeys(bucket) + ">"}},
			}
		},
	}
}

// recordView is an aggregate record stream: no subjects of its own,
// sourcing each data centre's own stream, whose DC subjects are
// transformed back to the §6 ones (dest).
func recordView(name, desc string, perDevice int64, replicas int, ownOf func(dc string) (stream, subjects string), dest string) dcs.View {
	return dcs.View{
		Config: jetstream.StreamConfig{
			Name: name, Description: desc, MaxMsgsPerSubject: perDevice,
			Storage: jetstream.FileStorage, Replicas: max(replicas, 1), Discard: jetstream.DiscardOld,
			AllowDirect: true, // listings, device views and history read by direct get
		},
		Source: func(dc, domain string) *jetstream.StreamSource {
			stream, from := ownOf(dc)
			return &jetstream.StreamSource{
				Name: stream, Domain: domain,
				SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: from, Destination: dest}},
			}
		},
	}
}

// noncesSeenView is hub_nonces_seen_<dc>: the nonces claimed in every
// other data centre, kept for the replay window, placed in this one. Its
// TTL is the window (unlike the §6 views): a nonce older than it is
// refused for its time anyway, and a partition makes no claim newer.
func noncesSeenView(l schema.Layout, replicas int, window time.Duration) dcs.View {
	bucket := l.NoncesSeen()
	v := kvView(bucket, "device nonces claimed in the other data centres", replicas, pres.Placement(l),
		func(dc string) string { return schema.Layout{DC: dc}.Nonces() })
	v.Config.MaxAge = window
	v.Config.Duplicates = min(window, 2*time.Minute)
	v.OthersOnly = true
	return v
}

// viewRefused explains a failed creation of aggregate name. A bucket of
// that name with message TTLs is one a node in classic mode made (on this
// JetStream before its cluster was named, or a node still in classic
// mode): JetStream cannot turn it into an aggregate, and the node does
// not delete state it did not make.
func (s *Server) viewRefused(ctx context.Context, name string, err error) error {
	cctx, cancel := context.WithTimeout(ctx, jscreate.CallTimeout)
	defer cancel()
	if st, serr := s.js.Stream(cctx, name); serr == nil && st.CachedInfo().Config.AllowMsgTTL {
		return fmt.Errorf("hub: aggregate %s: a store of that name exists with message TTLs, left by a node in classic mode; "+
			"in data-centre mode (data centre %s) it must be the aggregate of every data centre's own: once no node runs in classic mode, "+
			"delete it (nats stream rm %s) and the node creates the aggregate: %w", name, s.layout.DC, name, err)
	}
	return fmt.Errorf("hub: aggregate %s: %w", name, err)
}

// openViews creates the node's aggregates (data-centre mode), each with
// this data centre as a source unless it sources only the others, keeping
// the sources other data centres added, and keeps them as stores: one
// found missing is created again the same way (its other sources come
// back with the engine's next check).
func (s *Server) openViews(ctx, runCtx context.Context) error {
	l := s.layout
	if !l.DCMode() {
		return nil
	}
	for _, v := range dataCentreViews(l, s.cfg) {
		cfg := v.Config
		if !v.OthersOnly {
			cfg.Sources = []*jetstream.StreamSource{v.Source(l.DC, "")}
		}
		create := func(ctx context.Context) error {
			_, err := jscreate.WithSources(ctx, s.js, cfg)
			return err
		}
		if err := create(ctx); err != nil {
			return s.viewRefused(ctx, cfg.Name, err)
		}
		name := strings.TrimPrefix(cfg.Name, "KV_")
		if err := s.stores.add(ctx, runCtx, &store{name: name, stream: cfg.Name, create: create}); err != nil {
			return err
		}
	}
	return nil
}
