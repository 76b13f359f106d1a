package dcs

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KeyValueView is the view of a KV bucket: the stream of bucket cfg.Bucket
// with the settings jetstream.CreateKeyValue gives it (so that
// js.KeyValue, Get, direct gets and watches work on it, and a create of
// the bucket with the same config and sources is a no-op), sourcing the
// bucket own(dc) of every data centre, its keys moved to the view's
// subjects. cfg's TTL, LimitMarkerTTL, Mirror and Sources are ignored: a
// view never expires anything itself (expiries arrive as the sources'
// delete markers).
func KeyValueView(cfg jetstream.KeyValueConfig, own func(dc string) string, othersOnly bool) View {
	history := int64(max(cfg.History, 1))
	replicas := max(cfg.Replicas, 1)
	maxBytes, maxValue := cfg.MaxBytes, int32(cfg.MaxValueSize)
	if maxBytes == 0 {
		maxBytes = -1
	}
	if maxValue == 0 {
		maxValue = -1
	}
	var compression jetstream.StoreCompression
	if cfg.Compression {
		compression = jetstream.S2Compression
	}
	sc := jetstream.StreamConfig{
		Name:              "KV_" + cfg.Bucket,
		Description:       cfg.Description,
		Subjects:          []string{"$KV." + cfg.Bucket + ".>"},
		MaxMsgsPerSubject: history,
		MaxBytes:          maxBytes,
		MaxMsgSize:        maxValue,
		Storage:           cfg.Storage,
		Replicas:          replicas,
		Placement:         cfg.Placement,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		AllowDirect:       true,
		RePublish:         cfg.RePublish,
		Compression:       compression,
		Discard:           jetstream.DiscardNew,
		Metadata:          cfg.Metadata,
	}
	dst := "$KV." + cfg.Bucket + ".>"
	return View{
		Config: sc,
		Source: func(dc, domain string) *jetstream.StreamSource {
			b := own(dc)
			return &jetstream.StreamSource{Name: "KV_" + b, Domain: domain,
				SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: "$KV." + b + ".>", Destination: dst}}}
		},
		OthersOnly: othersOnly,
	}
}

// StreamView is the view of a record stream: cfg (its name, limits and
// placement; no subjects of its own, direct gets allowed, MaxAge and
// message TTLs cleared) sourcing every data centre's stream own(dc), each
// record's subject from(dc) (with one wildcard) moved to to (for example
// "hub.dc.east.dev.*.status" to "hub.dev.{{wildcard(1)}}.status").
func StreamView(cfg jetstream.StreamConfig, own, from func(dc string) string, to string) View {
	cfg.Subjects = nil
	cfg.AllowDirect = true
	cfg.MaxAge, cfg.AllowMsgTTL, cfg.SubjectDeleteMarkerTTL = 0, false, 0
	cfg.Sources, cfg.Mirror = nil, nil
	return View{
		Config: cfg,
		Source: func(dc, domain string) *jetstream.StreamSource {
			return &jetstream.StreamSource{Name: own(dc), Domain: domain,
				SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: from(dc), Destination: to}}}
		},
	}
}
