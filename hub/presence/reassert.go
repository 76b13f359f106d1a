package presence

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/fleethub/fleethub/hub/schema"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Putting back what NATS lost: entries gone or revisions the bucket no
// longer has after a reconnection (reassert), an entry that went away
// under a refresh (repair), and a bucket created again (rewriteHeld).

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
		info, err := tr.cfg.JS.Stream(ictx, "KV_"+tr.cfg.Layout.Presence())
		cancel()
		if err != nil {
			tr.stores.Lost(tr.cfg.Layout.Presence(), err)
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
				tr.stores.Lost(tr.cfg.Layout.Presence(), err)
				return false, err // maybe written: the next attempt reads it
			}
			tr.mu.Lock()
			ld.rev, ld.since = rev, since
			tr.mu.Unlock()
		default:
			tr.stores.Lost(tr.cfg.Layout.Presence(), err)
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
			tr.stores.Lost(tr.cfg.Layout.Presence(), err)
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
