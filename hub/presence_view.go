package hub

import (
	"encoding/json"
	"sort"
)

// intern returns the view's copy of a low-cardinality name. Caller holds
// p.mu.
func (p *presence) intern(name string) string {
	if x, ok := p.names[name]; ok {
		return x
	}
	if len(p.names) < 10000 {
		p.names[name] = name
	}
	return name
}

// viewLocked returns the device's view, creating it. Caller holds p.mu.
func (p *presence) viewLocked(sn string) *deviceView {
	v := p.view[sn]
	if v == nil {
		v = &deviceView{}
		p.view[sn] = v
	}
	return v
}

// devices lists the known devices (online, or in the presence history)
// that match, sorted by serial number.
func (p *presence) devices(match func(sn, typ, group string, online bool) bool) []DeviceView {
	p.mu.Lock()
	out := make([]DeviceView, 0, 16)
	for sn, v := range p.view {
		online := v.entry != nil
		if !online && v.offlineSince == 0 {
			continue // only a status so far: not in the presence history
		}
		if !match(sn, v.typ, v.group, online) {
			continue
		}
		dv := DeviceView{SN: sn, Type: v.typ, Group: v.group, Online: online, Since: v.offlineSince, LastSeen: v.lastSeen, Status: json.RawMessage("null")}
		if v.status != nil {
			at := v.statusAt
			dv.Status, dv.StatusAt = v.status, &at
		}
		if online {
			dv.Node, dv.Since = v.entry.Node, v.entry.Since
			dv.LastSeen = max(v.lastSeen, v.entry.LastSeen)
		}
		out = append(out, dv)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].SN < out[j].SN })
	return out
}

// setStatus records a device's last status in the view.
func (p *presence) setStatus(sn, typ, group string, status json.RawMessage, at int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.viewLocked(sn)
	if at < v.statusAt {
		return
	}
	v.status, v.statusAt = status, at
	if v.typ == "" {
		v.typ, v.group = p.intern(typ), p.intern(group)
	}
}

// each calls fn for every device in the view that is known (online, or
// with a presence record) and returns the set it visited.
func (p *presence) each(fn func(sn, typ, group string, online bool)) map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[string]bool, len(p.view))
	for sn, v := range p.view {
		if v.entry == nil && v.offlineSince == 0 {
			continue // only a status so far
		}
		seen[sn] = true
		fn(sn, v.typ, v.group, v.entry != nil)
	}
	return seen
}

// known returns a device's type and group as the view has them.
func (p *presence) known(sn string) (typ, group string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view[sn]
	if v == nil {
		return "", "", false
	}
	return v.typ, v.group, true
}
