package dcs

import (
	"strings"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// View is an aggregate of the data centres' own streams: a stream of this
// node's JetStream whose sources are one stream per data centre.
type View struct {
	// Config is the view's stream config, without sources. A view never
	// has a TTL, a MaxAge or message TTLs of its own: during a partition
	// it must keep the other data centres' state, and expiries reach it
	// as the sources' delete markers.
	Config jetstream.StreamConfig
	// Source is the source for data centre dc, whose JetStream domain is
	// domain: "" when dc shares this node's JetStream (one cluster, or a
	// supercluster), else the domain its stream lives in.
	Source func(dc, domain string) *jetstream.StreamSource
	// OthersOnly: the view sources every data centre but this node's own
	// (the nonces claimed elsewhere).
	OthersOnly bool
	// DCOf, when set, names the data centre a source stream of the view
	// belongs to (false: not one of Source's). When nil, the data centre
	// is read from the stream name by the pattern of Source's names
	// (Source(dc, "").Name holds dc once).
	DCOf func(stream string) (dc string, ok bool)
}

// probeDC is a data centre name no deployment uses, to learn where the
// name sits in Source's stream names.
const probeDC = "dcs0probe0"

// dcOf returns the data centre whose stream the view sources as stream.
func (v View) dcOf(stream string) (string, bool) {
	if v.DCOf != nil {
		return v.DCOf(stream)
	}
	pre, suf, ok := strings.Cut(v.Source(probeDC, "").Name, probeDC)
	if !ok || len(stream) <= len(pre)+len(suf) || !strings.HasPrefix(stream, pre) || !strings.HasSuffix(stream, suf) {
		return "", false
	}
	dc := stream[len(pre) : len(stream)-len(suf)]
	if !subjects.ValidToken(dc) || v.Source(dc, "").Name != stream {
		return "", false
	}
	return dc, true
}
