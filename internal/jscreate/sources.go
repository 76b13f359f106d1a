package jscreate

import (
	"context"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// WithSources creates stream cfg, or when it exists updates it to cfg
// with the union of its current sources and cfg.Sources: a source another
// writer added (another data centre's node) is kept, never dropped by a
// node that does not know of it. A source is the same when its name and
// its external API prefix (its domain) are. Concurrent writers that each
// add a different source can still lose one to the other (read, then
// update); whoever maintains an aggregate checks it again periodically.
//
// Each call has its own timeout, and transient errors are tried again,
// as in Ensure.
func WithSources(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return Ensure(ctx,
		func(ctx context.Context) (jetstream.Stream, error) { return js.CreateStream(ctx, cfg) },
		func(ctx context.Context) (jetstream.Stream, error) {
			st, err := js.Stream(ctx, cfg.Name)
			if err != nil {
				return nil, err
			}
			up := cfg
			up.Sources = MergeSources(st.CachedInfo().Config.Sources, cfg.Sources)
			return js.UpdateStream(ctx, up)
		})
}

// MergeSources is have with each of want that it lacks appended, in order
// (a source in want replaces the one of have with the same name and
// domain, so that its transforms are the current ones).
func MergeSources(have, want []*jetstream.StreamSource) []*jetstream.StreamSource {
	out := slices.Clone(have)
	for _, w := range want {
		if i := slices.IndexFunc(out, func(h *jetstream.StreamSource) bool { return SameSource(h, w) }); i >= 0 {
			out[i] = w
			continue
		}
		out = append(out, w)
	}
	return out
}

// SameSource reports whether a and b source the same stream: the same
// name in the same JetStream (external API prefix, or domain).
func SameSource(a, b *jetstream.StreamSource) bool {
	return a.Name == b.Name && sourceAPI(a) == sourceAPI(b)
}

// sourceAPI is the API prefix a source reaches its stream by: "" for this
// JetStream, $JS.<domain>.API for another domain.
func sourceAPI(s *jetstream.StreamSource) string {
	if s.External != nil && s.External.APIPrefix != "" {
		return s.External.APIPrefix
	}
	if s.Domain != "" {
		return "$JS." + s.Domain + ".API"
	}
	return ""
}
