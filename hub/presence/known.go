package presence

import (
	"context"
	"encoding/json"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Known returns a device's type and group as presence has them: from its
// entry while it is online, else from its last presence record. One
// batched direct get each, at most two, for a device the registry does
// not know. Both are read from the fleet's hub_presence and HUB_PRESENCE
// (the aggregates, in data-centre mode), so a device of any data centre
// is known.
func (tr *Tracker) Known(sn string) (typ, group string, ok bool) {
	ctx, cancel := context.WithTimeout(tr.runCtx, CallTimeout)
	defer cancel()
	var v struct {
		Type  string `json:"type"`
		Group string `json:"group"`
	}
	last := func(stream, subj string, skip func(nats.Header) bool) bool {
		found := false
		err := LastMessagesIn(ctx, tr.cfg.Conn, tr.cfg.JSDomain, stream, []string{subj}, func(_ string, _ uint64, h nats.Header, data []byte) {
			found = !skip(h) && json.Unmarshal(data, &v) == nil
		})
		return err == nil && found
	}
	removed := func(h nats.Header) bool {
		return h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != ""
	}
	if key, err := subjects.KVKey(schema.BucketPresence, sn); err == nil && last("KV_"+schema.BucketPresence, key, removed) {
		return v.Type, v.Group, true
	}
	subj, err := subjects.Presence(sn)
	if err != nil {
		return "", "", false
	}
	if last(schema.StreamPresence, subj, func(nats.Header) bool { return false }) {
		return v.Type, v.Group, true
	}
	return "", "", false
}
