package hub

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/schema"
)

// dirDevice is what the directory knows of one device: no status, no
// refresh times, only what presence records and the registry say. Names
// are interned. Guarded by directory.mu.
type dirDevice struct {
	sn          string
	typ, group  string // the registry's when registered, else the last record's
	node        string // online: the node of its connected record
	since       int64  // the At of its last record
	seq         uint64 // the last record's stream sequence
	online      bool
	recorded    bool // has a record in HUB_PRESENCE: listed
	registered  bool // has a hub_devices entry: counted
	regTyp, reg string
}

// pairKey is a (group, type) pair the summary counts by.
type pairKey struct{ group, typ string }

// dirIndex is the directory's view of every known device: by serial
// number, the listed ones also in sn order, and counts per (group, type)
// kept as devices change, so that neither a page nor a summary walks more
// than it answers. Guarded by directory.mu.
type dirIndex struct {
	bySN   map[string]*dirDevice
	sorted []*dirDevice // the recorded devices by sn; nil until built
	built  bool
	counts map[pairKey]*Counts
	names  map[string]string
}

func newDirIndex() *dirIndex {
	return &dirIndex{bySN: make(map[string]*dirDevice), counts: make(map[pairKey]*Counts), names: make(map[string]string)}
}

// maxInterned bounds the interned names: past it a name is kept as it
// comes (a hostile writer naming a million types costs memory, not
// correctness).
const maxInterned = 100000

func (x *dirIndex) intern(s string) string {
	if v, ok := x.names[s]; ok {
		return v
	}
	if len(x.names) < maxInterned {
		x.names[s] = s
	}
	return s
}

// count adds d's contribution to the counts (by -1 to remove it).
func (x *dirIndex) count(d *dirDevice, by int) {
	if !d.recorded && !d.registered {
		return
	}
	k := pairKey{d.group, d.typ}
	c := x.counts[k]
	if c == nil {
		c = &Counts{}
		x.counts[k] = c
	}
	if d.online {
		c.Online += by
	} else {
		c.Offline += by
	}
	if c.Online == 0 && c.Offline == 0 {
		delete(x.counts, k)
	}
}

// record applies a presence record stored at seq.
func (x *dirIndex) record(r *PresenceRecord, seq uint64) {
	d := x.bySN[r.SN]
	if d == nil {
		d = &dirDevice{sn: r.SN}
		x.bySN[r.SN] = d
	} else if seq <= d.seq {
		return
	}
	x.count(d, -1)
	if !d.recorded {
		d.recorded = true
		x.insert(d)
	}
	d.seq, d.online, d.since = seq, r.Online, r.At
	d.node = ""
	if r.Online {
		d.node = x.intern(r.Node)
	}
	// A registered device's sessions take their type and group from the
	// registry: its entry wins over what a record says (a record written
	// before the entry changed).
	switch {
	case d.registered:
		d.typ, d.group = d.regTyp, d.reg
	case r.Type != "":
		d.typ, d.group = x.intern(r.Type), x.intern(r.Group)
	}
	x.count(d, 1)
}

// register applies a registry entry (nil: removed).
func (x *dirIndex) register(sn string, dev *schema.Device) {
	d := x.bySN[sn]
	if d == nil {
		if dev == nil {
			return
		}
		d = &dirDevice{sn: sn}
		x.bySN[sn] = d
	}
	x.count(d, -1)
	d.registered = dev != nil
	d.regTyp, d.reg = "", ""
	if dev != nil {
		d.regTyp, d.reg = x.intern(dev.Type), x.intern(dev.Group)
		d.typ, d.group = d.regTyp, d.reg
	}
	if !d.recorded && !d.registered {
		delete(x.bySN, sn)
		return
	}
	x.count(d, 1)
}

// build sorts the recorded devices once everything is loaded; from then
// on each new one is inserted in place.
func (x *dirIndex) build() {
	x.sorted = make([]*dirDevice, 0, len(x.bySN))
	for _, d := range x.bySN {
		if d.recorded {
			x.sorted = append(x.sorted, d)
		}
	}
	sort.Slice(x.sorted, func(i, j int) bool { return x.sorted[i].sn < x.sorted[j].sn })
	x.built = true
}

func (x *dirIndex) insert(d *dirDevice) {
	if !x.built {
		return
	}
	i, _ := slices.BinarySearchFunc(x.sorted, d.sn, func(e *dirDevice, sn string) int { return strings.Compare(e.sn, sn) })
	x.sorted = slices.Insert(x.sorted, i, d)
}

// dirEntry is a device as the directory answers it: what the node then
// completes with direct gets (deviceViews).
type dirEntry struct {
	SN     string `json:"s"`
	Type   string `json:"t"`
	Group  string `json:"g"`
	Online bool   `json:"o,omitempty"`
	Node   string `json:"n,omitempty"`
	Since  int64  `json:"a"`
}

// page encodes, as the values of a dirReply, the devices matching mt
// after after in sn order: at most limit of them and at most maxBytes of
// encoding, with "more" when others match after the last.
func (x *dirIndex) page(mt *matcher, after string, limit, maxBytes int) []byte {
	i, found := slices.BinarySearchFunc(x.sorted, after, func(e *dirDevice, sn string) int { return strings.Compare(e.sn, sn) })
	if found {
		i++
	}
	out := append(make([]byte, 0, 4096), `{"d":[`...)
	n, more := 0, false
	for ; i < len(x.sorted); i++ {
		d := x.sorted[i]
		if !mt.match(d.sn, d.typ, d.group, d.online) {
			continue
		}
		if n == limit {
			more = true
			break
		}
		b, err := json.Marshal(dirEntry{SN: d.sn, Type: d.typ, Group: d.group, Online: d.online, Node: d.node, Since: d.since})
		if err != nil {
			continue // only strings, ints and bools
		}
		if len(out)+len(b)+len(`],"more":true}`)+1 > maxBytes {
			more = true
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
		n++
	}
	out = append(out, ']')
	if more {
		out = append(out, `,"more":true`...)
	}
	return append(out, '}')
}

// summary counts the devices groups may see.
func (x *dirIndex) summary(groups []string) Summary {
	sum := Summary{ByType: map[string]Counts{}, ByGroup: map[string]Counts{}}
	for k, c := range x.counts {
		if !auth.CanSee(groups, k.group) {
			continue
		}
		t, g := sum.ByType[k.typ], sum.ByGroup[k.group]
		t.Online += c.Online
		t.Offline += c.Offline
		g.Online += c.Online
		g.Offline += c.Offline
		sum.ByType[k.typ], sum.ByGroup[k.group] = t, g
		sum.Online += c.Online
		sum.Offline += c.Offline
	}
	return sum
}
