package presence

import (
	"context"
	"encoding/json"
	"errors"

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
