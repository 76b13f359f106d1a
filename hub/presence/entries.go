package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fleethub/fleethub/hub/schema"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// dropLocked forgets a local device session: its entry is no longer this
// node's to refresh. Caller holds tr.mu.
func (tr *Tracker) dropLocked(sn string, ld *localDevice) {
	ld.dropped = true
	if tr.local[sn] == ld {
		delete(tr.local, sn)
	}
}

// Connected records a device session that has just authenticated. It
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
func (tr *Tracker) Connected(ctx context.Context, d Device) error {
	unlock, err := tr.lockDevice(ctx, d.SN)
	if err != nil {
		return fmt.Errorf("presence: device %s: %w", d.SN, err)
	}
	defer unlock()
	if err := tr.putIndex(ctx, d.SN, d.Session); err != nil {
		return fmt.Errorf("presence: device %s: %w", d.SN, err)
	}
	now := tr.now()
	entry := schema.PresenceEntry{
		Node: tr.cfg.NodeID, Session: d.Session, Since: now.UnixMilli(), LastSeen: now.UnixMilli(),
		Addr: d.Addr, Type: d.Type, Group: d.Group,
	}
	b, _ := json.Marshal(entry)
	rev, created, err := tr.writeEntry(ctx, d.SN, d.Session, b)
	if err != nil {
		sn, session := d.SN, d.Session
		tr.cfg.Go(func() { tr.expire(sn, session, schema.ReasonClosed) })
		return fmt.Errorf("presence: device %s: %w", d.SN, err)
	}
	tr.mu.Lock()
	if old := tr.local[d.SN]; old != nil {
		if old.grace != nil {
			old.grace.Stop()
		}
		tr.dropLocked(d.SN, old)
	}
	// Pretend the last write was up to a whole interval earlier than it
	// was, so that the refreshes of devices that connected together spread
	// evenly over the interval, this cycle and every later one.
	every := RefreshAfter(tr.cfg.PresenceTTL)
	jitter := time.Duration(rand.Int64N(int64(every) + 1))
	ld := &localDevice{session: d.Session, rev: rev, since: entry.Since, dev: d, addr: d.Addr}
	tr.local[d.SN] = ld
	tr.schedule(ld, now.Add(every-jitter).UnixNano())
	tr.mu.Unlock()
	if created || !tr.lastSaysOnline(ctx, d.SN) {
		rec := schema.PresenceRecord{SN: d.SN, Type: d.Type, Group: d.Group, Online: true, Reason: schema.ReasonConnected, Node: tr.cfg.NodeID, At: now.UnixMilli()}
		if err := tr.record(ctx, rec, d.Session+"/on"); err != nil {
			// The session is served: its record follows when it can.
			tr.cfg.Go(func() { tr.recordConnected(ld, rec, d.Session+"/on") })
		}
	}
	return nil
}

// lastSaysOnline reports whether the device's last presence record says
// online, for a session that took over an entry (the device came back
// within its grace): then no record is due. It is read from the stream,
// not guessed, before a record is written: a write the stream refuses
// must not be tried in vain.
func (tr *Tracker) lastSaysOnline(ctx context.Context, sn string) bool {
	subj, err := subjects.Presence(sn)
	if err != nil {
		return true
	}
	last, err := tr.readRecord(ctx, sn, subj)
	return err == nil && last.says(true)
}

// writeEntry writes the entry b of session for sn: created if there is
// none (created true), else over the one there is, checked against its
// revision so that a removal in between is not undone unseen. An entry
// that already names session is this session's own earlier write, whose
// answer was lost. A missing bucket is created again, once.
func (tr *Tracker) writeEntry(ctx context.Context, sn, session string, b []byte) (rev uint64, created bool, err error) {
	healed := false
	for range QuickRetries + 1 {
		rev, err = tr.kv.Create(ctx, sn, b)
		if err == nil {
			return rev, true, nil
		}
		if storeGone(err) && !healed {
			healed = true
			if herr := tr.stores.Heal(ctx, schema.BucketPresence); herr != nil {
				return 0, false, err
			}
			continue
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, false, err
		}
		e, err := tr.kv.Get(ctx, sn)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed meanwhile: create it
		}
		if err != nil {
			return 0, false, err
		}
		var pe schema.PresenceEntry
		if json.Unmarshal(e.Value(), &pe) == nil && pe.Session == session {
			return e.Revision(), true, nil
		}
		rev, err = tr.kv.Update(ctx, sn, b, e.Revision())
		if err == nil {
			return rev, false, nil
		}
		if !IsWrongLastSeq(err) {
			return 0, false, err
		}
	}
	return 0, false, ErrContended
}

// recordConnected stores the connected record of a session whose record
// could not be stored while it authenticated, for as long as the session
// is still this node's.
func (tr *Tracker) recordConnected(ld *localDevice, rec schema.PresenceRecord, msgID string) {
	tr.retry("connected", tr.forDevice(rec.SN, func(ctx context.Context) (bool, error) {
		tr.mu.Lock()
		gone := tr.stopped || ld.dropped
		tr.mu.Unlock()
		if gone {
			return true, nil // expired or replaced meanwhile: what follows settles it
		}
		err := tr.record(ctx, rec, msgID)
		return err == nil, err
	}))
}

// Disconnected starts the grace of device sn's session that ended. A
// replaced session has no grace: the newer one owns the entry; the device
// leaves this node's index unless the newer session is here too.
func (tr *Tracker) Disconnected(sn, session string, reason schema.Reason) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	ld := tr.local[sn]
	if ld == nil || ld.session != session || tr.stopped {
		return
	}
	if reason == schema.ReasonReplaced {
		tr.dropLocked(sn, ld)
		tr.cfg.Go(func() { tr.retry("unindex", tr.unindexing(sn, tr.cfg.NodeID)) })
		return
	}
	ld.gone = true
	ld.grace = tr.cfg.Clock.AfterFunc(tr.cfg.OfflineGrace, func() {
		tr.cfg.Go(func() { tr.expire(sn, session, reason) })
	})
}

// expire reports a device offline if its entry still names session: the
// record first, then the entry's removal, checked against the revision
// that was read (see Tracker), tried until done; then the device leaves
// this node's index.
func (tr *Tracker) expire(sn, session string, reason schema.Reason) {
	tr.retry("expire", tr.then(tr.expiry(sn, session, reason), tr.unindexing(sn, tr.cfg.NodeID)))
}

// expiry is the step of expire. Each attempt reads the entry and does
// what is left: the offline record (unless the last record says so
// already: a retry after a write that timed out), then the removal. A
// device that came back on another session after its offline record was
// stored is reported connected again.
func (tr *Tracker) expiry(sn, session string, reason schema.Reason) step {
	return tr.expiryStep(sn, session, reason, nil, false, false)
}

// expiryStep is expiry, for callers that know more: read, when set, is
// the entry as just read, which the first attempt takes instead of reading
// it again; offlined says the offline record is stored already; maybe
// says it may be (an append whose answer was lost), so that a device back
// on a newer session is recorded back (record, reading the last record,
// writes nothing if none is due).
func (tr *Tracker) expiryStep(sn, session string, reason schema.Reason, read jetstream.KeyValueEntry, offlined, maybe bool) step {
	at := tr.now().UnixMilli()
	return tr.forDevice(sn, func(ctx context.Context) (bool, error) {
		tr.mu.Lock()
		stopped := tr.stopped
		ld := tr.local[sn]
		mine := ld != nil && ld.session == session
		if mine && ld.gone {
			tr.dropLocked(sn, ld)
		}
		tr.mu.Unlock()
		if stopped || (mine && !ld.gone) {
			// Stopped: the other nodes take over. Or the session is served
			// here after all (its auth was tried again).
			return true, nil
		}
		e, err := read, error(nil)
		if read = nil; e == nil {
			e, err = tr.kv.Get(ctx, sn)
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return true, nil // removed, by this expiry or whoever reported it
		}
		if err != nil {
			tr.stores.Lost(schema.BucketPresence, err)
			return false, err
		}
		var pe schema.PresenceEntry
		if json.Unmarshal(e.Value(), &pe) != nil {
			return true, nil // not an entry any node wrote: left to its TTL
		}
		if pe.Session != session {
			if !offlined && !maybe {
				return true, nil // the device is back, on a newer session
			}
			// It came back after its offline record: say so.
			err := tr.recordBack(ctx, sn, &pe)
			return err == nil, err
		}
		if !offlined {
			rec := schema.PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: false, Reason: reason, Node: pe.Node, At: at}
			if err := tr.record(ctx, rec, session+"/off"); err != nil {
				return false, err
			}
			offlined = true
		}
		err = tr.kv.Delete(ctx, sn, jetstream.LastRevision(e.Revision()))
		if err == nil {
			return true, nil
		}
		if IsWrongLastSeq(err) {
			return false, nil // the entry changed: look at it again
		}
		tr.stores.Lost(schema.BucketPresence, err)
		return false, err // maybe removed, maybe not: look again
	})
}

// recordBack reports connected a device whose entry pe was written (by
// any node) after its offline record.
func (tr *Tracker) recordBack(ctx context.Context, sn string, pe *schema.PresenceEntry) error {
	rec := schema.PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: true, Reason: schema.ReasonConnected, Node: pe.Node, At: tr.now().UnixMilli()}
	return tr.record(ctx, rec, pe.Session+"/on")
}

// then makes a step that runs first until done, then second: each attempt
// runs what is left.
func (tr *Tracker) then(first, second step) step {
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
func (tr *Tracker) reassert(ctx context.Context) {
	tr.mu.Lock()
	held := make([]*localDevice, 0, len(tr.local))
	for _, ld := range tr.local {
		if !ld.gone {
			held = append(held, ld)
		}
	}
	tr.mu.Unlock()
	var revised, rewritten int
	// Reads that fail (NATS is still settling) are tried again, backing
	// off, while the node stays connected.
	for attempt := 0; len(held) > 0; attempt++ {
		if attempt > 0 {
			tr.metrics.Retried("reassert", len(held))
			if !Backoff(ctx, attempt) {
				tr.metrics.Abandoned("reassert", len(held))
				return
			}
		}
		if ctx.Err() != nil || !tr.cfg.Conn.IsConnected() {
			return // the next reconnection starts over
		}
		ictx, cancel := context.WithTimeout(ctx, CallTimeout)
		info, err := tr.cfg.JS.Stream(ictx, "KV_"+schema.BucketPresence)
		cancel()
		if err != nil {
			tr.stores.Lost(schema.BucketPresence, err)
			continue
		}
		last := info.CachedInfo().State.LastSeq
		failed := held[:0]
		for _, ld := range held {
			switch tr.reassertOne(ctx, ld, last) {
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
		tr.log.Warn("presence entries lost by NATS restored", "rewritten", rewritten, "revisions", revised)
	}
}

const (
	reassertKept = iota
	reassertRevised
	reassertRewritten
	reassertFailed
)

func (tr *Tracker) reassertOne(ctx context.Context, ld *localDevice, last uint64) int {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	sn := ld.dev.SN
	unlock, err := tr.lockDevice(ctx, sn)
	if err != nil {
		return reassertFailed
	}
	defer unlock()
	e, err := tr.kv.Get(ctx, sn)
	if err == nil {
		var pe schema.PresenceEntry
		if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != ld.session {
			return reassertKept // another session's: the takeover settles it
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
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
	tr.mu.Lock()
	held := !tr.stopped && !ld.dropped && !ld.gone
	since := tr.now().UnixMilli()
	pe := tr.entryOf(ld, since)
	tr.mu.Unlock()
	if !held {
		return reassertKept
	}
	rev, err := tr.kv.Create(ctx, sn, AppendEntry(nil, &pe))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return reassertKept // written meanwhile, by whichever session
	}
	if err != nil {
		return reassertFailed
	}
	tr.mu.Lock()
	if !ld.dropped {
		ld.rev = rev
	}
	tr.mu.Unlock()
	// Lost by NATS, nobody saw it go, and the last record still says
	// online: no record. Reported offline meanwhile (this node was taken
	// for lost while cut off): connected again. record decides which.
	rec := schema.PresenceRecord{SN: sn, Type: ld.dev.Type, Group: ld.dev.Group, Online: true, Reason: schema.ReasonConnected, Node: tr.cfg.NodeID, At: since}
	msgID := ld.session + "/on-" + strconv.FormatInt(since, 10)
	if err := tr.record(ctx, rec, msgID); err != nil {
		tr.cfg.Go(func() { tr.recordConnected(ld, rec, msgID) })
	}
	return reassertRewritten
}

// entryOf is the entry this node writes for a device session it holds.
// Since and the rest stay as first written; only last_seen moves.
func (tr *Tracker) entryOf(ld *localDevice, lastSeen int64) schema.PresenceEntry {
	return schema.PresenceEntry{
		Node: tr.cfg.NodeID, Session: ld.session, Since: ld.since, LastSeen: lastSeen,
		Addr: ld.addr, Type: ld.dev.Type, Group: ld.dev.Group,
	}
}

// repair puts back the entry of a device connected here whose entry went
// away (it expired while this node was cut off from NATS, and was reported
// offline), and reports it connected (unless its last record says so
// already: nobody reported it offline). If another session holds the
// entry by then, the takeover closes this one instead. Tried until done,
// for as long as the session is this node's.
func (tr *Tracker) repair(sn string, ld *localDevice) {
	tr.retry("repair", tr.repairing(sn, ld))
}

// repairing is the step of repair.
func (tr *Tracker) repairing(sn string, ld *localDevice) step {
	var since int64 // of the entry written back, once written
	return tr.forDevice(sn, func(ctx context.Context) (bool, error) {
		tr.mu.Lock()
		held := !tr.stopped && tr.local[sn] == ld && !ld.gone && !ld.dropped
		tr.mu.Unlock()
		if !held {
			return true, nil
		}
		e, err := tr.kv.Get(ctx, sn)
		switch {
		case err == nil:
			var pe schema.PresenceEntry
			if json.Unmarshal(e.Value(), &pe) != nil || pe.Session != ld.session {
				// Another session's: no longer this node's to refresh; the
				// takeover announcement closes this one.
				tr.mu.Lock()
				tr.dropLocked(sn, ld)
				tr.mu.Unlock()
				if tr.cfg.Lost != nil {
					tr.cfg.Lost(sn, ld.session)
				}
				tr.cfg.Go(func() { tr.retry("unindex", tr.unindexing(sn, tr.cfg.NodeID)) })
				return true, nil
			}
			// This repair's own write, whose answer was lost: its record
			// is due. Otherwise a write this node lost track of.
			written := since != 0 && pe.Since == since
			tr.mu.Lock()
			ld.rev = e.Revision()
			if written {
				ld.since = since
			}
			tr.mu.Unlock()
			if !written {
				return true, nil
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
			since = tr.now().UnixMilli()
			tr.mu.Lock()
			pe := tr.entryOf(ld, since)
			tr.mu.Unlock()
			pe.Since = since
			rev, err := tr.kv.Create(ctx, sn, AppendEntry(nil, &pe))
			if errors.Is(err, jetstream.ErrKeyExists) {
				return false, nil // written meanwhile: look again
			}
			if err != nil {
				tr.stores.Lost(schema.BucketPresence, err)
				return false, err // maybe written: the next attempt reads it
			}
			tr.mu.Lock()
			ld.rev, ld.since = rev, since
			tr.mu.Unlock()
		default:
			tr.stores.Lost(schema.BucketPresence, err)
			return false, err
		}
		rec := schema.PresenceRecord{SN: sn, Type: ld.dev.Type, Group: ld.dev.Group, Online: true, Reason: schema.ReasonConnected, Node: tr.cfg.NodeID, At: since}
		err = tr.record(ctx, rec, ld.session+"/on-"+strconv.FormatInt(since, 10))
		return err == nil, err
	})
}

// rewriteHeld runs when hub_presence was created again: nobody saw its
// entries go, so this node writes back those of the devices it holds,
// including those in their grace (their expiry needs the entry to report
// them), with no record; each at its own revision in the new bucket.
func (tr *Tracker) rewriteHeld() {
	tr.mu.Lock()
	var steps []step
	for sn, ld := range tr.local {
		if !ld.dropped {
			steps = append(steps, tr.rewriting(sn, ld))
		}
	}
	tr.mu.Unlock()
	tr.retry("rewrite", steps...)
}

// forDevice makes f a step that runs holding sn's device lock.
func (tr *Tracker) forDevice(sn string, f step) step {
	return func(ctx context.Context) (bool, error) {
		unlock, err := tr.lockDevice(ctx, sn)
		if err != nil {
			return false, err
		}
		defer unlock()
		return f(ctx)
	}
}

func (tr *Tracker) rewriting(sn string, ld *localDevice) step {
	return tr.forDevice(sn, func(ctx context.Context) (bool, error) {
		tr.mu.Lock()
		held := !tr.stopped && tr.local[sn] == ld && !ld.dropped
		pe := tr.entryOf(ld, tr.now().UnixMilli())
		tr.mu.Unlock()
		if !held {
			return true, nil
		}
		rev, err := tr.kv.Create(ctx, sn, AppendEntry(nil, &pe))
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, err := tr.kv.Get(ctx, sn)
			if err != nil {
				return false, err
			}
			var cur schema.PresenceEntry
			if json.Unmarshal(e.Value(), &cur) != nil || cur.Session != ld.session {
				return true, nil // another session's: the takeover settles it
			}
			rev = e.Revision() // this node's write, whose answer was lost
		} else if err != nil {
			tr.stores.Lost(schema.BucketPresence, err)
			return false, err
		}
		tr.mu.Lock()
		if !ld.dropped {
			ld.rev = rev
		}
		tr.mu.Unlock()
		return true, nil
	})
}
