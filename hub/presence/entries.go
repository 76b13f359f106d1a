package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
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
	// A device may come from another data centre: that one removes its
	// entry there after the grace, and the removal reaches hub_presence
	// after this entry and hides it. A new entry here (none of the device
	// was left in this data centre) is then written again once the
	// removal should have come, and once more after as long again (see
	// moves.go). Nothing is read to find out: the fleet's hub_presence
	// may live in another data centre (a supercluster), and a connect
	// costs no round trip to one.
	movedIn := tr.cfg.Layout.DCMode()
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
	if created && movedIn {
		ld.rewrites = moveRewrites
	}
	tr.local[d.SN] = ld
	tr.schedule(ld, tr.nextRefresh(ld, now, now.Add(every-jitter)).UnixNano())
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
	subj, err := tr.cfg.Layout.PresenceSubject(sn)
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
			if herr := tr.stores.Heal(ctx, tr.cfg.Layout.Presence()); herr != nil {
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
// leaves this node's index unless the newer session is here too. In
// data-centre mode it has one: the newer session may be in another data
// centre, whose entry is in another bucket, and this one's entry is then
// removed once the grace has passed (see movedAway), with no record.
func (tr *Tracker) Disconnected(sn, session string, reason schema.Reason) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	ld := tr.local[sn]
	if ld == nil || ld.session != session || tr.stopped {
		return
	}
	if reason == schema.ReasonReplaced && !tr.cfg.Layout.DCMode() {
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
			tr.stores.Lost(tr.cfg.Layout.Presence(), err)
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
		if !offlined && !maybe {
			moved, err := tr.movedAway(ctx, sn, session, reason)
			if err != nil {
				return false, err
			}
			offlined = moved // no record: the device is online elsewhere
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
		tr.stores.Lost(tr.cfg.Layout.Presence(), err)
		return false, err // maybe removed, maybe not: look again
	})
}

// recordBack reports connected a device whose entry pe was written (by
// any node) after its offline record.
func (tr *Tracker) recordBack(ctx context.Context, sn string, pe *schema.PresenceEntry) error {
	rec := schema.PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: true, Reason: schema.ReasonConnected, Node: pe.Node, At: tr.now().UnixMilli()}
	return tr.record(ctx, rec, pe.Session+"/on")
}
