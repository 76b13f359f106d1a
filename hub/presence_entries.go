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

	"github.com/fleethub/fleethub/subjects"
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
		p.srv.goTask(func() { p.repair(sn, ld) })
		return
	}
	// An entry that expired is the last resort: no node refreshed it, so
	// the node that held it is gone and nobody reported the device. The
	// coordinator does, once (the record's id de-duplicates).
	if live && e.Operation() == jetstream.KeyValuePurge && old != nil && coordinator {
		p.srv.goTask(func() { p.lastResort(sn, old) })
	}
}

// refreshed handles the common put, a refresh: the entry as the view has
// it but for last_seen. It reads only last_seen, with no JSON decoding, and
// takes the put for a refresh only if it is byte for byte that entry.
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
	// A refresh is exactly the entry this node would write with that
	// last_seen; anything else (another field changed, a longer number,
	// bytes after it) is decoded in full, as any other put.
	e := *v.entry
	e.LastSeen = ls
	var buf [256]byte
	if !bytes.Equal(appendPresenceEntry(buf[:0], &e), value) {
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
// elsewhere), overwrites it without a record, unless the device's last
// record says offline. When the entry cannot be written (a missing bucket
// is created again first), the session is not served; a write that timed
// out may have taken effect all the same, so the entry is looked at again
// later and, if it names the session, taken back (see expire).
func (p *presence) connected(ctx context.Context, s *Session) error {
	id := s.Identity()
	unlock, err := p.lockDevice(ctx, id.SN)
	if err != nil {
		return fmt.Errorf("hub: presence of %s: %w", id.SN, err)
	}
	defer unlock()
	now := p.srv.cfg.Now()
	entry := PresenceEntry{
		Node: p.srv.cfg.NodeID, Session: s.id, Since: now.UnixMilli(), LastSeen: now.UnixMilli(),
		Addr: s.remote, Type: id.Type, Group: id.Group,
	}
	b, _ := json.Marshal(entry)
	rev, created, err := p.writeEntry(ctx, id.SN, s.id, b)
	if err != nil {
		sn, session := id.SN, s.id
		p.srv.goTask(func() { p.expire(sn, session, ReasonClosed) })
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
	if created || !p.lastSaysOnline(ctx, id.SN) {
		rec := PresenceRecord{SN: id.SN, Type: id.Type, Group: id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: now.UnixMilli()}
		if err := p.record(ctx, rec, s.id+"/on"); err != nil {
			// The session is served: its record follows when it can.
			p.srv.goTask(func() { p.recordConnected(ld, rec, s.id+"/on") })
		}
	}
	return nil
}

// lastSaysOnline reports whether the device's last presence record says
// online, for a session that took over an entry (the device came back
// within its grace): then no record is due. The view may lag behind the
// stream (another node's connected record not yet seen), so a view that
// does not say online is checked against the stream itself before a
// record is written: a write the stream refuses still reaches the core
// subscribers of hub.presence.<sn>, so it must not be tried in vain.
func (p *presence) lastSaysOnline(ctx context.Context, sn string) bool {
	if p.viewRecord(sn).online {
		return true
	}
	subj, err := subjects.Presence(sn)
	if err != nil {
		return true
	}
	last, err := p.readRecord(ctx, sn, subj)
	return err == nil && last.says(true)
}

// writeEntry writes the entry b of session for sn: created if there is
// none (created true), else over the one there is, checked against its
// revision so that a removal in between is not undone unseen. An entry
// that already names session is this session's own earlier write, whose
// answer was lost. A missing bucket is created again, once.
func (p *presence) writeEntry(ctx context.Context, sn, session string, b []byte) (rev uint64, created bool, err error) {
	healed := false
	for range quickRetries + 1 {
		rev, err = p.kv.Create(ctx, sn, b)
		if err == nil {
			return rev, true, nil
		}
		if storeGone(err) && !healed {
			healed = true
			if herr := p.srv.stores.heal(ctx, BucketPresence); herr != nil {
				return 0, false, err
			}
			continue
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, false, err
		}
		e, err := p.kv.Get(ctx, sn)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed meanwhile: create it
		}
		if err != nil {
			return 0, false, err
		}
		var pe PresenceEntry
		if json.Unmarshal(e.Value(), &pe) == nil && pe.Session == session {
			return e.Revision(), true, nil
		}
		rev, err = p.kv.Update(ctx, sn, b, e.Revision())
		if err == nil {
			return rev, false, nil
		}
		if !isWrongLastSeq(err) {
			return 0, false, err
		}
	}
	return 0, false, errPresenceContended
}

// recordConnected stores the connected record of a session whose record
// could not be stored while it authenticated, for as long as the session
// is still this node's.
func (p *presence) recordConnected(ld *localDevice, rec PresenceRecord, msgID string) {
	p.retry("connected", p.forDevice(rec.SN, func(ctx context.Context) (bool, error) {
		p.mu.Lock()
		gone := p.stopped || ld.dropped
		p.mu.Unlock()
		if gone {
			return true, nil // expired or replaced meanwhile: what follows settles it
		}
		err := p.record(ctx, rec, msgID)
		return err == nil, err
	}))
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

// expire reports a device offline if its entry still names session: the
// record first, then the entry's removal, checked against the revision
// that was read (see presence), tried until done.
func (p *presence) expire(sn, session string, reason Reason) {
	p.retry("expire", p.expiry(sn, session, reason))
}

// expiry is the step of expire. Each attempt reads the entry and does
// what is left: the offline record (unless the last record says so
// already: a retry after a write that timed out), then the removal. A
// device that came back on another session after its offline record was
// stored is reported connected again.
func (p *presence) expiry(sn, session string, reason Reason) step {
	at := p.srv.cfg.Now().UnixMilli()
	offlined := false
	return p.forDevice(sn, func(ctx context.Context) (bool, error) {
		p.mu.Lock()
		stopped := p.stopped
		ld := p.local[sn]
		mine := ld != nil && ld.session == session
		if mine && ld.gone {
			p.dropLocked(sn, ld)
		}
		p.mu.Unlock()
		if stopped || (mine && !ld.gone) {
			// Stopped: the other nodes take over. Or the session is served
			// here after all (its auth was tried again).
			return true, nil
		}
		e, err := p.kv.Get(ctx, sn)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return true, nil // removed, by this expiry or whoever reported it
		}
		if err != nil {
			p.srv.stores.lost(BucketPresence, err)
			return false, err
		}
		var pe PresenceEntry
		if json.Unmarshal(e.Value(), &pe) != nil {
			return true, nil // not an entry any node wrote: left to its TTL
		}
		if pe.Session != session {
			if !offlined {
				return true, nil // the device is back, on a newer session
			}
			// It came back after its offline record: say so.
			err := p.recordBack(ctx, sn, &pe)
			return err == nil, err
		}
		if !offlined {
			rec := PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: false, Reason: reason, Node: pe.Node, At: at}
			if err := p.record(ctx, rec, session+"/off"); err != nil {
				return false, err
			}
			offlined = true
		}
		err = p.kv.Delete(ctx, sn, jetstream.LastRevision(e.Revision()))
		if err == nil {
			return true, nil
		}
		if isWrongLastSeq(err) {
			return false, nil // the entry changed: look at it again
		}
		p.srv.stores.lost(BucketPresence, err)
		return false, err // maybe removed, maybe not: look again
	})
}

// recordBack reports connected a device whose entry pe was written (by
// any node) after its offline record.
func (p *presence) recordBack(ctx context.Context, sn string, pe *PresenceEntry) error {
	rec := PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: true, Reason: ReasonConnected, Node: pe.Node, At: p.srv.cfg.Now().UnixMilli()}
	return p.record(ctx, rec, pe.Session+"/on")
}

// lastResort reports offline, with node_lost, a device whose entry old
// expired by its TTL, unless the entry was written again meanwhile; once
// the record is stored, an entry written again in between makes the
// device connected again.
func (p *presence) lastResort(sn string, old *PresenceEntry) {
	at := p.srv.cfg.Now().UnixMilli()
	offlined := false
	p.retry("node_lost", p.forDevice(sn, func(ctx context.Context) (bool, error) {
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if stopped {
			return true, nil
		}
		e, err := p.kv.Get(ctx, sn)
		if err == nil {
			var pe PresenceEntry
			if !offlined || json.Unmarshal(e.Value(), &pe) != nil {
				return true, nil // written again: the device is online
			}
			err := p.recordBack(ctx, sn, &pe)
			return err == nil, err
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			p.srv.stores.lost(BucketPresence, err)
			return false, err
		}
		if offlined {
			return true, nil
		}
		rec := PresenceRecord{SN: sn, Type: old.Type, Group: old.Group, Online: false, Reason: ReasonNodeLost, Node: old.Node, At: at}
		if err := p.record(ctx, rec, old.Session+"/off"); err != nil {
			return false, err
		}
		offlined = true
		return false, nil // look at the entry once more: it may be back
	}))
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
	// Reads that fail (NATS is still settling) are tried again, backing
	// off, while the node stays connected.
	for attempt := 0; len(held) > 0; attempt++ {
		if attempt > 0 {
			p.srv.metrics.presenceRetries.WithLabelValues("reassert").Add(float64(len(held)))
			if !sleepBackoff(ctx, attempt) {
				p.srv.metrics.presenceAbandoned.WithLabelValues("reassert").Add(float64(len(held)))
				return
			}
		}
		if ctx.Err() != nil || !p.srv.nc.IsConnected() {
			return // the next reconnection starts over
		}
		ictx, cancel := context.WithTimeout(ctx, presenceCallTimeout)
		info, err := p.srv.js.Stream(ictx, "KV_"+BucketPresence)
		cancel()
		if err != nil {
			p.srv.stores.lost(BucketPresence, err)
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
	ctx, cancel := context.WithTimeout(ctx, presenceCallTimeout)
	defer cancel()
	sn := ld.id.SN
	unlock, err := p.lockDevice(ctx, sn)
	if err != nil {
		return reassertFailed
	}
	defer unlock()
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
// offline), and reports it connected (unless its last record says so
// already: nobody reported it offline). If another session holds the
// entry by then, the takeover closes this one instead. Tried until done,
// for as long as the session is this node's.
func (p *presence) repair(sn string, ld *localDevice) {
	var since int64 // of the entry written back, once written
	p.retry("repair", p.forDevice(sn, func(ctx context.Context) (bool, error) {
		p.mu.Lock()
		held := !p.stopped && p.local[sn] == ld && !ld.gone && !ld.dropped
		p.mu.Unlock()
		if !held {
			return true, nil
		}
		e, err := p.kv.Get(ctx, sn)
		switch {
		case err == nil:
			var pe PresenceEntry
			if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != ld.session {
				return true, nil // another session's: the takeover settles it
			}
			// This repair's own write, whose answer was lost: its record
			// is due. Otherwise a write this node lost track of.
			written := since != 0 && pe.Since == since
			p.mu.Lock()
			ld.rev = e.Revision()
			if written {
				ld.since = since
			}
			p.mu.Unlock()
			if !written {
				return true, nil
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
			since = p.srv.cfg.Now().UnixMilli()
			p.mu.Lock()
			pe := p.entryOf(ld, since)
			p.mu.Unlock()
			pe.Since = since
			rev, err := p.kv.Create(ctx, sn, appendPresenceEntry(nil, &pe))
			if errors.Is(err, jetstream.ErrKeyExists) {
				return false, nil // written meanwhile: look again
			}
			if err != nil {
				p.srv.stores.lost(BucketPresence, err)
				return false, err // maybe written: the next attempt reads it
			}
			p.mu.Lock()
			ld.rev, ld.since = rev, since
			p.mu.Unlock()
		default:
			p.srv.stores.lost(BucketPresence, err)
			return false, err
		}
		rec := PresenceRecord{SN: sn, Type: ld.id.Type, Group: ld.id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: since}
		err = p.record(ctx, rec, ld.session+"/on-"+strconv.FormatInt(since, 10))
		return err == nil, err
	}))
}

// rewriteHeld runs when hub_presence was created again: nobody saw its
// entries go, so this node writes back those of the devices it holds,
// including those in their grace (their expiry needs the entry to report
// them), with no record; each at its own revision in the new bucket.
func (p *presence) rewriteHeld() {
	p.mu.Lock()
	var steps []step
	for sn, ld := range p.local {
		if !ld.dropped {
			steps = append(steps, p.rewriting(sn, ld))
		}
	}
	p.mu.Unlock()
	p.retry("rewrite", steps...)
}

// forDevice makes f a step that runs holding sn's device lock.
func (p *presence) forDevice(sn string, f step) step {
	return func(ctx context.Context) (bool, error) {
		unlock, err := p.lockDevice(ctx, sn)
		if err != nil {
			return false, err
		}
		defer unlock()
		return f(ctx)
	}
}

func (p *presence) rewriting(sn string, ld *localDevice) step {
	return p.forDevice(sn, func(ctx context.Context) (bool, error) {
		p.mu.Lock()
		held := !p.stopped && p.local[sn] == ld && !ld.dropped
		pe := p.entryOf(ld, p.srv.cfg.Now().UnixMilli())
		p.mu.Unlock()
		if !held {
			return true, nil
		}
		rev, err := p.kv.Create(ctx, sn, appendPresenceEntry(nil, &pe))
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, err := p.kv.Get(ctx, sn)
			if err != nil {
				return false, err
			}
			var cur PresenceEntry
			if json.Unmarshal(e.Value(), &cur) != nil || cur.Session != ld.session {
				return true, nil // another session's: the takeover settles it
			}
			rev = e.Revision() // this node's write, whose answer was lost
		} else if err != nil {
			p.srv.stores.lost(BucketPresence, err)
			return false, err
		}
		p.mu.Lock()
		if !ld.dropped {
			ld.rev = rev
		}
		p.mu.Unlock()
		return true, nil
	})
}
