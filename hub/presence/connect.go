package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The connect path. A device that authenticates waits for its presence
// writes before it is answered, so what they cost in round trips is what
// every connect costs, and in a reconnect storm what every device of a
// node waits. In order:
//
//  1. the index key (acknowledged first: node_lost must find every entry
//     this node writes, should it die before it answers);
//  2. the entry's create, sent without waiting, and meanwhile, on this
//     goroutine, a read of the device's last record (a direct get);
//  3. the connected record, when one is due, appended after the record
//     read in 2 (a compare-and-set on its sequence).
//
// The read in 2 may come before the entry's write took effect, so it is
// trusted only where that cannot matter:
//   - it says offline (or there is none): a connected record is due
//     whichever way the entry was written, and the append's
//     compare-and-set refuses it if another record came after the read
//     (the append then reads again and decides again, as any append does);
//   - it says online and the entry was taken over from another session
//     (an update checked against the revision read): no record is due;
//     should the older session's offline record have come in between, its
//     expiry finds the entry changed under it and records the device back
//     (see expiryStep), as it does for a serial read;
//   - it says online and the entry was created: the record it read may
//     have been followed by an offline record and the removal that let
//     the create succeed, so the record is read again (record).
//
// An entry that exists already (the device is back within its grace, or
// replaces a session) is read once, raw (a removed key's marker has the
// revision a create must name), and overwritten against that revision.

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
	b := AppendEntry(make([]byte, 0, 160), &entry)
	// A device may come from another data centre: that one removes its
	// entry there after the grace, and the removal reaches hub_presence
	// after this entry and hides it. A new entry here (none of the device
	// was left in this data centre) is then written again once the
	// removal should have come, and once more after as long again (see
	// moves.go). Nothing is read to find out: the fleet's hub_presence
	// may live in another data centre (a supercluster), and a connect
	// costs no round trip to one.
	movedIn := tr.cfg.Layout.DCMode()
	create := tr.sendCreate(d.SN, b)
	subj, subjErr := tr.cfg.Layout.PresenceSubject(d.SN)
	var (
		last    lastRecord
		lastErr = subjErr
	)
	if subjErr == nil {
		last, lastErr = tr.readRecord(ctx, d.SN, subj)
	}
	rev, created, err := tr.awaitEntry(ctx, create, d.SN, d.Session, b)
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
	if subjErr != nil {
		return nil // no such subject: no record can be kept for it
	}
	var read *lastRecord
	switch {
	case lastErr == nil && !last.says(true):
		read = &last // due either way: appended after what was read
	case lastErr == nil && !created:
		return nil // taken over from a session the last record says online
	}
	rec := schema.PresenceRecord{SN: d.SN, Type: d.Type, Group: d.Group, Online: true, Reason: schema.ReasonConnected, Node: tr.cfg.NodeID, At: now.UnixMilli()}
	if err := tr.recordAfter(ctx, rec, d.Session+"/on", read); err != nil {
		// The session is served: its record follows when it can.
		tr.cfg.Go(func() { tr.recordConnected(ld, rec, d.Session+"/on") })
	}
	return nil
}

// sendCreate sends the create-only write of sn's entry b without waiting
// for its acknowledgement, or returns nil when it could not be sent (then
// awaitEntry writes it the long way).
func (tr *Tracker) sendCreate(sn string, b []byte) jetstream.PubAckFuture {
	m := &nats.Msg{
		Subject: tr.entryPrefix + sn,
		Data:    b,
		Header:  nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{"0"}},
	}
	f, err := tr.pubJS.PublishMsgAsync(m)
	if err != nil {
		return nil
	}
	return f
}

// awaitEntry waits for the create sent by sendCreate and, when it was
// refused (the key exists, or its removal left a marker) or its outcome is
// unknown, writes the entry the long way (writeEntry), which looks at what
// is there. It returns what writeEntry does.
func (tr *Tracker) awaitEntry(ctx context.Context, create jetstream.PubAckFuture, sn, session string, b []byte) (rev uint64, created bool, err error) {
	if create != nil {
		select {
		case ack := <-create.Ok():
			return ack.Sequence, true, nil
		case err := <-create.Err():
			if !IsWrongLastSeq(err) && !storeGone(err) && !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
				tr.stores.Lost(tr.cfg.Layout.Presence(), err)
				return 0, false, err
			}
		case <-ctx.Done():
			return 0, false, ctx.Err() // may have taken effect: the caller's expire looks
		}
	}
	return tr.writeEntry(ctx, sn, session, b)
}

// writeEntry writes the entry b of session for sn: created if there is
// none (created true), else over the one there is, checked against its
// revision so that a removal in between is not undone unseen. An entry
// that already names session is this session's own earlier write, whose
// answer was lost. A missing bucket is created again, once. Each attempt
// reads the key's last message first (the entry, or the marker its
// removal left, whose revision a create must name), then writes against
// it.
func (tr *Tracker) writeEntry(ctx context.Context, sn, session string, b []byte) (rev uint64, created bool, err error) {
	healed := false
	for range QuickRetries + 1 {
		var (
			seq  uint64
			live bool
			pe   schema.PresenceEntry
		)
		seq, live, pe, err = tr.lastEntry(ctx, sn)
		if err == nil {
			switch {
			case live && pe.Session == session:
				return seq, true, nil
			case live:
				rev, err = tr.kv.Update(ctx, sn, b, seq)
				if err == nil {
					return rev, false, nil
				}
			default: // none, or removed: a create, against the marker's revision
				rev, err = tr.kv.Update(ctx, sn, b, seq)
				if err == nil {
					return rev, true, nil
				}
			}
		}
		if storeGone(err) && !healed {
			healed = true
			if herr := tr.stores.Heal(ctx, tr.cfg.Layout.Presence()); herr != nil {
				return 0, false, err
			}
			continue
		}
		if !IsWrongLastSeq(err) {
			tr.stores.Lost(tr.cfg.Layout.Presence(), err)
			return 0, false, err
		}
		// Written meanwhile: look again.
	}
	return 0, false, ErrContended
}

// lastEntry reads the last message of sn's key in hub_presence: its
// revision (0: none), whether it is an entry (live) rather than a
// removal's marker, and the entry. An entry no node could have written
// counts as one of another session.
func (tr *Tracker) lastEntry(ctx context.Context, sn string) (seq uint64, live bool, pe schema.PresenceEntry, err error) {
	subj := DirectGetSubject(tr.cfg.JSDomain, "KV_"+tr.cfg.Layout.Presence()) + "." + tr.entryPrefix + sn
	m, err := tr.cfg.Conn.RequestWithContext(ctx, subj, nil)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return 0, false, pe, jetstream.ErrStreamNotFound
		}
		return 0, false, pe, err
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return 0, false, pe, nil
	default:
		return 0, false, pe, fmt.Errorf("presence: entry of %s: status %s %s", sn, status, m.Header.Get("Description"))
	}
	seq, err = strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return 0, false, pe, fmt.Errorf("presence: entry of %s: no sequence", sn)
	}
	if m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		return seq, false, pe, nil
	}
	_ = json.Unmarshal(m.Data, &pe)
	return seq, true, pe, nil
}
