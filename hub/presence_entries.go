package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	pres "github.com/fleethub/fleethub/hub/presence"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// dropLocked forgets a local device session: its entry is no longer this
// node's to refresh. Caller holds p.mu.
func (p *presence) dropLocked(sn string, ld *localDevice) {
	ld.dropped = true
	if p.local[sn] == ld {
		delete(p.local, sn)
	}
}

// connected records a device session that has just authenticated. It
// puts the device in this node's index (so that node_lost finds it should
// this node die), then creates the device's entry (publishing a connected
// record) or, when the entry exists (the device is back within its grace,
// or replaces a session elsewhere), overwrites it without a record, unless
// the device's last record says offline. When the index key or the entry
// cannot be written (a missing bucket is created again first), the session
// is not served; a write that timed out may have taken effect all the
// same, so the entry is looked at again later and, if it names the
// session, taken back (see expire). An index key left behind names a
// device whose entry does not name this node: node_lost passes it over.
func (p *presence) connected(ctx context.Context, s *Session) error {
	id := s.Identity()
	unlock, err := p.lockDevice(ctx, id.SN)
	if err != nil {
		return fmt.Errorf("hub: presence of %s: %w", id.SN, err)
	}
	defer unlock()
	if err := p.putIndex(ctx, id.SN, s.id); err != nil {
		return fmt.Errorf("hub: presence of %s: %w", id.SN, err)
	}
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
	p.schedule(ld, now.Add(every-jitter).UnixNano())
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
// within its grace): then no record is due. It is read from the stream,
// not guessed, before a record is written: a write the stream refuses
// must not be tried in vain.
func (p *presence) lastSaysOnline(ctx context.Context, sn string) bool {
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
// session has no grace: the newer one owns the entry; the device leaves
// this node's index unless the newer session is here too.
func (p *presence) disconnected(s *Session, reason Reason) {
	id := s.Identity()
	p.mu.Lock()
	defer p.mu.Unlock()
	ld := p.local[id.SN]
	if ld == nil || ld.session != s.id || p.stopped {
		return
	}
	sn, session := id.SN, s.id
	if reason == ReasonReplaced {
		p.dropLocked(sn, ld)
		p.srv.goTask(func() { p.retry("unindex", p.unindexing(sn, p.srv.cfg.NodeID)) })
		return
	}
	ld.gone = true
	ld.grace = time.AfterFunc(p.srv.cfg.OfflineGrace, func() {
		p.srv.goTask(func() { p.expire(sn, session, reason) })
	})
}

// expire reports a device offline if its entry still names session: the
// record first, then the entry's removal, checked against the revision
// that was read (see presence), tried until done; then the device leaves
// this node's index.
func (p *presence) expire(sn, session string, reason Reason) {
	p.retry("expire", p.then(p.expiry(sn, session, reason), p.unindexing(sn, p.srv.cfg.NodeID)))
}

// expiry is the step of expire. Each attempt reads the entry and does
// what is left: the offline record (unless the last record says so
// already: a retry after a write that timed out), then the removal. A
// device that came back on another session after its offline record was
// stored is reported connected again.
func (p *presence) expiry(sn, session string, reason Reason) step {
	return p.expiryStep(sn, session, reason, nil, false, false)
}

// expiryStep is expiry, for callers that know more: read, when set, is
// the entry as just read, which the first attempt takes instead of reading
// it again; offlined says the offline record is stored already; maybe
// says it may be (an append whose answer was lost), so that a device back
// on a newer session is recorded back (record, reading the last record,
// writes nothing if none is due).
func (p *presence) expiryStep(sn, session string, reason Reason, read jetstream.KeyValueEntry, offlined, maybe bool) step {
	at := p.srv.cfg.Now().UnixMilli()
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
		e, err := read, error(nil)
		if read = nil; e == nil {
			e, err = p.kv.Get(ctx, sn)
		}
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
			if !offlined && !maybe {
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

// then makes a step that runs first until done, then second: each attempt
// runs what is left.
func (p *presence) then(first, second step) step {
	firstDone := false
	return func(ctx context.Context) (bool, error) {
		if !firstDone {
			done, err := first(ctx)
			if !done {
				return false, err
			}
			firstDone = true
		}
		return second(ctx)
	}
}

// reassert runs after a reconnection to NATS. A NATS server that crashed
// may have lost its last writes without any watcher being told (see
// openSoftBucket): the entry of a device that connected just before is
// gone, or this node learned of a revision that the bucket no longer has,
// and every refresh of that entry would fail its revision check until the
// entry expired. Each device held here is read back: a lost entry is
// written again, with a connected record only if the last record says
// offline (the coordinator took this node for lost while it was cut off),
// and a revision beyond the bucket's last is replaced by the entry's own.
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
	held := !p.stopped && !ld.dropped && !ld.gone
	since := p.srv.cfg.Now().UnixMilli()
	pe := p.entryOf(ld, since)
	p.mu.Unlock()
	if !held {
		return reassertKept
	}
	rev, err := p.kv.Create(ctx, sn, pres.AppendEntry(nil, &pe))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return reassertKept // written meanwhile, by whichever session
	}
	if err != nil {
		return reassertFailed
	}
	p.mu.Lock()
	if !ld.dropped {
		ld.rev = rev
	}
	p.mu.Unlock()
	// Lost by NATS, nobody saw it go, and the last record still says
	// online: no record. Reported offline meanwhile (this node was taken
	// for lost while cut off): connected again. record decides which.
	rec := PresenceRecord{SN: sn, Type: ld.id.Type, Group: ld.id.Group, Online: true, Reason: ReasonConnected, Node: p.srv.cfg.NodeID, At: since}
	msgID := ld.session + "/on-" + strconv.FormatInt(since, 10)
	if err := p.record(ctx, rec, msgID); err != nil {
		p.srv.goTask(func() { p.recordConnected(ld, rec, msgID) })
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
	p.retry("repair", p.repairing(sn, ld))
}

// repairing is the step of repair.
func (p *presence) repairing(sn string, ld *localDevice) step {
	var since int64 // of the entry written back, once written
	return p.forDevice(sn, func(ctx context.Context) (bool, error) {
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
				// Another session's: no longer this node's to refresh; the
				// takeover announcement closes this one.
				p.mu.Lock()
				p.dropLocked(sn, ld)
				p.mu.Unlock()
				p.srv.goTask(func() { p.retry("unindex", p.unindexing(sn, p.srv.cfg.NodeID)) })
				return true, nil
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
			rev, err := p.kv.Create(ctx, sn, pres.AppendEntry(nil, &pe))
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
	})
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
		rev, err := p.kv.Create(ctx, sn, pres.AppendEntry(nil, &pe))
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
