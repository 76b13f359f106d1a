package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// onEntry follows hub_presence.
func (p *presence) onEntry(e jetstream.KeyValueEntry, live bool) {
	sn := e.Key()
	if e.Operation() == jetstream.KeyValuePut {
		if p.refreshed(sn, e.Value(), e.Revision()) {
			return
		}
		var pe PresenceEntry
		if err := json.Unmarshal(e.Value(), &pe); err != nil {
			return
		}
		p.mu.Lock()
		// Nodes, types and groups are few: one copy of each name.
		pe.Node, pe.Type, pe.Group = p.intern(pe.Node), p.intern(pe.Type), p.intern(pe.Group)
		v := p.viewLocked(sn)
		v.entry = &pe
		v.tookLocked(pe.Session, e.Revision())
		v.lastSeen = max(v.lastSeen, pe.LastSeen)
		if pe.Type != "" {
			v.typ, v.group = pe.Type, pe.Group
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	v := p.viewLocked(sn)
	old := v.entry
	v.entry = nil
	if old != nil && v.offlineSince < old.Since {
		// The offline record normally comes first; until it does, the
		// removal is the best time there is.
		v.offlineSince = p.srv.cfg.Now().UnixMilli()
	}
	coordinator := p.isCoordinatorLocked()
	ld := p.local[sn]
	held := ld != nil && !ld.gone && !p.stopped
	p.mu.Unlock()
	if held && live {
		// The entry of a device connected here went away (it expired while
		// this node was cut off, or another node took this node for lost):
		// put it back.
		p.srv.goTask(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.repair(ctx, sn, ld)
		})
		return
	}
	// An entry that expired is the last resort: no node refreshed it, so
	// the node that held it is gone and nobody reported the device. The
	// coordinator does, once (the record's id de-duplicates).
	if live && e.Operation() == jetstream.KeyValuePurge && old != nil && coordinator {
		p.srv.goTask(func() { p.publishOffline(sn, old, ReasonNodeLost) })
	}
}

// refreshed handles the common put, a refresh: the entry as the view has
// it but for last_seen. It recognises one by its node and session and reads
// only last_seen, with no JSON decoding.
func (p *presence) refreshed(sn string, value []byte, rev uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view[sn]
	if v == nil || v.entry == nil {
		return false
	}
	// {"node":"<node>","session":"<session>",...: compared piece by piece,
	// without building the prefix.
	rest := value
	for _, piece := range [...]string{`{"node":"`, v.entry.Node, `","session":"`, v.entry.Session, `",`} {
		var ok bool
		if rest, ok = cutPrefix(rest, piece); !ok {
			return false
		}
	}
	i := bytes.Index(value, lastSeenKey)
	if i < 0 {
		return false
	}
	i += len(lastSeenKey)
	var ls int64
	j := i
	for ; j < len(value) && value[j] >= '0' && value[j] <= '9' && j-i < 18; j++ {
		ls = ls*10 + int64(value[j]-'0')
	}
	if j == i {
		return false
	}
	// Readers copy the entry's fields under p.mu, so it is updated in place.
	v.entry.LastSeen = ls
	v.lastSeen = max(v.lastSeen, ls)
	v.tookLocked(v.entry.Session, rev)
	return true
}

// tookLocked records the revision of a write of the entry of session,
// when that is the device's session here: its next refresh checks against
// it. Caller holds presence.mu.
func (v *deviceView) tookLocked(session string, rev uint64) {
	if ld := v.local; ld != nil && ld.session == session && rev > ld.rev {
		ld.rev = rev
	}
}

// dropLocked forgets a local device session: its entry is no longer this
// node's to refresh. Caller holds p.mu.
func (p *presence) dropLocked(sn string, ld *localDevice) {
	ld.dropped = true
	if p.local[sn] == ld {
		delete(p.local, sn)
	}
	if v := p.view[sn]; v != nil && v.local == ld {
		v.local = nil
	}
}

// cutPrefix reports whether b starts with s (compared without allocating)
// and returns the rest.
func cutPrefix(b []byte, s string) ([]byte, bool) {
	if len(b) < len(s) || string(b[:len(s)]) != s {
		return b, false
	}
	return b[len(s):], true
}

var lastSeenKey = []byte(`"last_seen":`)

// connected records a device session that has just authenticated. It
// creates the device's entry (publishing a connected record) or, when the
// entry exists (the device is back within its grace, or replaces a session
// elsewhere), overwrites it without a record.
func (p *presence) connected(ctx context.Context, s *Session) error {
	id := s.Identity()
	now := p.srv.cfg.Now()
	entry := PresenceEntry{
		Node: p.srv.cfg.NodeID, Session: s.id, Since: now.UnixMilli(), LastSeen: now.UnixMilli(),
		Addr: s.remote, Type: id.Type, Group: id.Group,
	}
	b, _ := json.Marshal(entry)
	rev, err := p.kv.Create(ctx, id.SN, b)
	created := err == nil
	if errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = p.kv.Put(ctx, id.SN, b)
	}
	if err != nil {
		return fmt.Errorf("hub: presence of %s: %w", id.SN, err)
	}
	p.mu.Lock()
	if old := p.local[id.SN]; old != nil {
		if old.grace != nil {
			old.grace.Stop()
		}
		p.dropLocked(id.SN, old)
	}
	// Pretend the last write was up to a whole interval earlier than it
	// was, so that the refreshes of devices that connected together spread
	// evenly over the interval, this cycle and every later one.
	every := refreshAfter(p.srv.cfg.PresenceTTL)
	jitter := time.Duration(rand.Int64N(int64(every) + 1))
	ld := &localDevice{session: s.id, rev: rev, since: entry.Since, id: id, addr: s.remote}
	p.local[id.SN] = ld
	p.viewLocked(id.SN).local = ld
	p.due.push(dueItem{at: now.Add(every - jitter).UnixNano(), ld: ld})
	p.mu.Unlock()
	if created {
		p.publish(ctx, PresenceRecord{SN: id.SN, Type: id.Type, Group: id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: now.UnixMilli()}, s.id+"/on")
	}
	return nil
}

// disconnected starts the grace of a device session that ended. A replaced
// session has no grace: the newer one owns the entry.
func (p *presence) disconnected(s *Session, reason Reason) {
	id := s.Identity()
	p.mu.Lock()
	defer p.mu.Unlock()
	ld := p.local[id.SN]
	if ld == nil || ld.session != s.id || p.stopped {
		return
	}
	if reason == ReasonReplaced {
		p.dropLocked(id.SN, ld)
		return
	}
	ld.gone = true
	sn, session := id.SN, s.id
	ld.grace = time.AfterFunc(p.srv.cfg.OfflineGrace, func() {
		p.srv.goTask(func() { p.expire(sn, session, reason) })
	})
}

// expire reports a device offline if its entry still names session:
// the record first, then the entry's removal, checked against the revision
// that was read (see presence).
func (p *presence) expire(sn, session string, reason Reason) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.mu.Lock()
	if ld := p.local[sn]; ld != nil && ld.session == session {
		p.dropLocked(sn, ld)
	}
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		return
	}
	e, err := p.kv.Get(ctx, sn)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			p.srv.log.Error("presence read failed", "sn", sn, "err", err)
		}
		return
	}
	var pe PresenceEntry
	if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != session {
		return // the device is back, on a newer session
	}
	p.publishOffline(sn, &pe, reason)
	err = p.kv.Delete(ctx, sn, jetstream.LastRevision(e.Revision()))
	if err == nil {
		return
	}
	// The device came back between the read and the removal: say so.
	cur, gerr := p.kv.Get(ctx, sn)
	if gerr != nil {
		return
	}
	var back PresenceEntry
	if json.Unmarshal(cur.Value(), &back) == nil {
		p.publish(ctx, PresenceRecord{SN: sn, Type: back.Type, Group: back.Group, Online: true, Reason: ReasonConnected, Node: back.Node, At: p.srv.cfg.Now().UnixMilli()}, back.Session+"/on")
	}
}

// reassert runs after a reconnection to NATS. A NATS server that crashed
// may have lost its last writes without any watcher being told (see
// openSoftBucket): the entry of a device that connected just before is
// gone, or this node learned of a revision that the bucket no longer has,
// and every refresh of that entry would fail its revision check until the
// entry expired. Each device held here is read back: a lost entry is
// written again, with no record (nobody saw it go; a removal that was seen
// is put back by repair, with one), and a revision beyond the bucket's
// last is replaced by the entry's own.
func (p *presence) reassert(ctx context.Context) {
	p.mu.Lock()
	held := make([]*localDevice, 0, len(p.local))
	for _, ld := range p.local {
		if !ld.gone {
			held = append(held, ld)
		}
	}
	p.mu.Unlock()
	var revised, rewritten int
	// Reads that fail (NATS is still settling) are tried again, a few
	// times, backing off.
	for attempt := 0; len(held) > 0; attempt++ {
		if attempt > 0 {
			if attempt == 6 {
				p.srv.log.Warn("presence entries not checked after reconnecting", "left", len(held))
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
			}
		}
		if ctx.Err() != nil || !p.srv.nc.IsConnected() {
			return // the next reconnection starts over
		}
		info, err := p.srv.js.Stream(ctx, "KV_"+BucketPresence)
		if err != nil {
			continue
		}
		last := info.CachedInfo().State.LastSeq
		failed := held[:0]
		for _, ld := range held {
			switch p.reassertOne(ctx, ld, last) {
			case reassertRevised:
				revised++
			case reassertRewritten:
				rewritten++
			case reassertFailed:
				failed = append(failed, ld)
			}
		}
		held = failed
	}
	if revised+rewritten > 0 {
		p.srv.log.Warn("presence entries lost by NATS restored", "rewritten", rewritten, "revisions", revised)
	}
}

const (
	reassertKept = iota
	reassertRevised
	reassertRewritten
	reassertFailed
)

func (p *presence) reassertOne(ctx context.Context, ld *localDevice, last uint64) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sn := ld.id.SN
	e, err := p.kv.Get(ctx, sn)
	if err == nil {
		var pe PresenceEntry
		if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != ld.session {
			return reassertKept // another session's: the takeover settles it
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		// A refresh checked against a revision the bucket lost fails, so
		// none can have moved the entry past e meanwhile.
		if !ld.dropped && ld.rev > last {
			ld.rev = e.Revision()
			return reassertRevised
		}
		return reassertKept
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return reassertFailed
	}
	p.mu.Lock()
	v := p.view[sn]
	unseen := !p.stopped && !ld.dropped && !ld.gone && v != nil && v.entry != nil && v.entry.Session == ld.session
	p.mu.Unlock()
	if !unseen {
		return reassertKept
	}
	pe := p.entryOf(ld, p.srv.cfg.Now().UnixMilli())
	rev, err := p.kv.Create(ctx, sn, appendPresenceEntry(nil, &pe))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return reassertKept // written meanwhile, by whichever session
	}
	if err != nil {
		return reassertFailed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ld.dropped {
		ld.rev = rev
	}
	return reassertRewritten
}

// entryOf is the entry this node writes for a device session it holds.
// Since and the rest stay as first written; only last_seen moves.
func (p *presence) entryOf(ld *localDevice, lastSeen int64) PresenceEntry {
	return PresenceEntry{
		Node: p.srv.cfg.NodeID, Session: ld.session, Since: ld.since, LastSeen: lastSeen,
		Addr: ld.addr, Type: ld.id.Type, Group: ld.id.Group,
	}
}

// repair puts back the entry of a device connected here whose entry went
// away (it expired while this node was cut off from NATS, and was reported
// offline), and reports it connected. If another session holds the entry
// by then, the takeover closes this one instead.
func (p *presence) repair(ctx context.Context, sn string, ld *localDevice) {
	e, err := p.kv.Get(ctx, sn)
	if err == nil {
		var pe PresenceEntry
		if json.Unmarshal(e.Value(), &pe) == nil && pe.Session == ld.session {
			p.mu.Lock()
			ld.rev = e.Revision() // ours after all (a write this node lost track of)
			p.mu.Unlock()
		}
		return
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return
	}
	now := p.srv.cfg.Now()
	b, _ := json.Marshal(PresenceEntry{Node: p.srv.cfg.NodeID, Session: ld.session, Since: now.UnixMilli(), LastSeen: now.UnixMilli(), Addr: ld.addr, Type: ld.id.Type, Group: ld.id.Group})
	rev, err := p.kv.Create(ctx, sn, b)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.local[sn] == ld {
		ld.rev, ld.since = rev, now.UnixMilli()
	}
	p.mu.Unlock()
	p.publish(ctx, PresenceRecord{SN: sn, Type: ld.id.Type, Group: ld.id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: now.UnixMilli()}, ld.session+"/on-"+strconv.FormatInt(now.UnixMilli(), 10))
}
