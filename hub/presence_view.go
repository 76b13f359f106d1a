package hub

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// devices lists the known devices (online, or with an offline record)
// that match, sorted by serial number, read from JetStream: each device's
// last record in HUB_PRESENCE and the entries of hub_presence. A stand-in
// that reads the whole fleet on every call, until listings and snapshots
// are answered by the directory; a node keeps no fleet-wide view.
func (p *presence) devices(match func(sn, typ, group string, online bool) bool) []DeviceView {
	all := p.allDevices()
	out := make([]DeviceView, 0, len(all))
	for _, v := range all {
		if match(v.SN, v.Type, v.Group, v.Online) {
			out = append(out, v)
		}
	}
	return out
}

// allDevices reads every known device. Calls that come while a read runs
// share the next one, which starts after they came: a burst of snapshots
// costs two reads, and none answers with what was read before it asked.
func (p *presence) allDevices() []DeviceView {
	asked := time.Now()
	p.readMu.Lock()
	defer p.readMu.Unlock()
	if !p.readAt.After(asked) {
		start := time.Now()
		p.read, p.readAt = p.readAll(), start
	}
	return p.read
}

func (p *presence) readAll() []DeviceView {
	ctx, cancel := context.WithTimeout(p.srv.runCtx, presenceCallTimeout)
	defer cancel()
	known := make(map[string]*DeviceView)
	p.lastPerSubject(ctx, StreamPresence, subjects.AllPresence, func(_ string, h nats.Header, data []byte) {
		var r PresenceRecord
		if json.Unmarshal(data, &r) == nil && validPresence(&r) && !r.Online {
			known[r.SN] = &DeviceView{SN: r.SN, Type: r.Type, Group: r.Group, Since: r.At}
		}
	})
	p.lastPerSubject(ctx, "KV_"+BucketPresence, presenceSubjectPrefix+">", func(subj string, h nats.Header, data []byte) {
		var pe PresenceEntry
		if h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "" || json.Unmarshal(data, &pe) != nil {
			return
		}
		sn := subj[len(presenceSubjectPrefix):]
		known[sn] = &DeviceView{SN: sn, Type: pe.Type, Group: pe.Group, Online: true, Node: pe.Node, Since: pe.Since, LastSeen: pe.LastSeen}
	})
	out := make([]DeviceView, 0, len(known))
	for _, v := range known {
		v.Status = json.RawMessage("null")
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SN < out[j].SN })
	return out
}

// lastPerSubject calls fn with the last message of each subject of stream
// that matches filter, read by a consumer that is removed once done.
func (p *presence) lastPerSubject(ctx context.Context, stream, filter string, fn func(subj string, h nats.Header, data []byte)) {
	st, err := p.srv.js.Stream(ctx, stream)
	if err != nil || st.CachedInfo().State.Msgs == 0 {
		return
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: filter, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second, MemoryStorage: true,
	})
	if err != nil {
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(p.srv.runCtx, presenceCallTimeout)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	if cons.CachedInfo().NumPending == 0 {
		return
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return
		}
		n := 0
		for m := range batch.Messages() {
			n++
			fn(m.Subject(), m.Headers(), m.Data())
			if meta, err := m.Metadata(); err == nil && meta.NumPending == 0 {
				return
			}
		}
		if n == 0 {
			return
		}
	}
}

// setStatus was the view's last-status cache, gone with the view.
func (p *presence) setStatus(sn, typ, group string, status json.RawMessage, at int64) {}

// each calls fn for every known device (see devices) and returns the set
// it visited.
func (p *presence) each(fn func(sn, typ, group string, online bool)) map[string]bool {
	seen := make(map[string]bool)
	for _, v := range p.devices(func(string, string, string, bool) bool { return true }) {
		seen[v.SN] = true
		fn(v.SN, v.Type, v.Group, v.Online)
	}
	return seen
}

// known returns a device's type and group as presence has them: from its
// entry while it is online, else from its last presence record. Two reads
// at most, for a device the registry does not know.
func (p *presence) known(sn string) (typ, group string, ok bool) {
	ctx, cancel := context.WithTimeout(p.srv.runCtx, presenceCallTimeout)
	defer cancel()
	var v struct {
		Type  string `json:"type"`
		Group string `json:"group"`
	}
	if e, err := p.kv.Get(ctx, sn); err == nil && json.Unmarshal(e.Value(), &v) == nil {
		return v.Type, v.Group, true
	}
	subj, err := subjects.Presence(sn)
	if err != nil {
		return "", "", false
	}
	m, err := p.records.GetLastMsgForSubject(ctx, subj)
	if err != nil || json.Unmarshal(m.Data, &v) != nil {
		return "", "", false
	}
	return v.Type, v.Group, true
}
