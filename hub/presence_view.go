package hub

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/fleethub/fleethub/subjects"
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

// allDevices reads every known device, at most every 50 ms: a burst of
// snapshots shares one read.
func (p *presence) allDevices() []DeviceView {
	p.readMu.Lock()
	defer p.readMu.Unlock()
	if now := time.Now(); now.Sub(p.readAt) > 50*time.Millisecond {
		p.read, p.readAt = p.readAll(), now
	}
	return p.read
}

func (p *presence) readAll() []DeviceView {
	ctx, cancel := context.WithTimeout(p.srv.runCtx, presenceCallTimeout)
	defer cancel()
	known := make(map[string]*DeviceView)
	p.lastRecords(ctx, func(r *PresenceRecord) {
		if !r.Online {
			known[r.SN] = &DeviceView{SN: r.SN, Type: r.Type, Group: r.Group, Since: r.At}
		}
	})
	if st, err := p.kv.Status(ctx); err != nil || st.Values() == 0 {
		// Nothing online.
	} else if w, err := p.kv.WatchAll(ctx, jetstream.IgnoreDeletes()); err == nil {
		for e := range w.Updates() {
			if e == nil {
				break
			}
			var pe PresenceEntry
			if json.Unmarshal(e.Value(), &pe) != nil {
				continue
			}
			known[e.Key()] = &DeviceView{SN: e.Key(), Type: pe.Type, Group: pe.Group, Online: true, Node: pe.Node, Since: pe.Since, LastSeen: pe.LastSeen}
		}
		_ = w.Stop()
	}
	out := make([]DeviceView, 0, len(known))
	for _, v := range known {
		v.Status = json.RawMessage("null")
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SN < out[j].SN })
	return out
}

// lastRecords calls fn with each device's last record in HUB_PRESENCE.
func (p *presence) lastRecords(ctx context.Context, fn func(*PresenceRecord)) {
	info, err := p.records.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return
	}
	cons, err := p.srv.js.OrderedConsumer(ctx, StreamPresence, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.AllPresence}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
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
			var r PresenceRecord
			if json.Unmarshal(m.Data(), &r) == nil && validPresence(&r) {
				fn(&r)
			}
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
