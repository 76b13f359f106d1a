package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Devices that change data centre (data-centre mode only).
//
// Each data centre keeps its own entries and records, and judges only its
// own: a device that leaves one data centre for another (its data centre
// failed over, or it dialled another one) is handed over through the
// fleet's hub_presence, the aggregate of every data centre's entries. The
// data centre it left, at the end of the grace of its session there
// (closed, replaced, or its node lost), finds in the aggregate that the
// device is online on another session, and removes its own entry without
// an offline record (movedAway). That removal reaches the aggregate after
// the new data centre's entry and hides it there, so the new data
// centre's node writes a new entry again once the removal has come
// (moveSettled, twice): every new entry in data-centre mode, since
// finding out whether the device came from elsewhere would cost a read of
// the fleet's hub_presence on the connect, which in a supercluster may be
// in another data centre. A device whose new entry has not reached the
// aggregate when the grace ends (a partition) is reported offline by the
// data centre it left, as a device that left is.

// moveRewrites is how many times the entry of a device that moved in is
// written again early, moveSettled apart.
const moveRewrites = 2

// nextRefresh is when ld's next refresh is due, normally at next: earlier
// while it has early rewrites left (a device that moved in), each taking
// one. Caller holds tr.mu.
func (tr *Tracker) nextRefresh(ld *localDevice, now, next time.Time) time.Time {
	if ld.rewrites == 0 {
		return next
	}
	ld.rewrites--
	return minTime(next, now.Add(tr.moveSettled()))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// moveSettled is how long after a device moved in its entry is written
// again: past the grace of its session in the data centre it left, and
// the time for that node to be found lost, with a margin for the
// aggregate to take the removal.
func (tr *Tracker) moveSettled() time.Duration {
	return tr.cfg.OfflineGrace + 2*tr.cfg.NodeTTL + time.Second
}

// fleetEntry reads device sn's entry in the fleet's hub_presence (the
// aggregate): ok false when there is none.
func (tr *Tracker) fleetEntry(ctx context.Context, sn string) (pe schema.PresenceEntry, ok bool, err error) {
	key, err := subjects.KVKey(schema.BucketPresence, sn)
	if err != nil {
		return pe, false, nil
	}
	err = LastMessagesIn(ctx, tr.cfg.Conn, tr.cfg.JSDomain, "KV_"+schema.BucketPresence, []string{key}, func(_ string, _ uint64, h nats.Header, data []byte) {
		if h.Get("KV-Operation") == "" && h.Get(jetstream.MarkerReasonHeader) == "" {
			ok = json.Unmarshal(data, &pe) == nil
		}
	})
	if err != nil {
		tr.stores.Lost(schema.BucketPresence, err)
		return pe, false, fmt.Errorf("presence: %s of %s: %w", schema.BucketPresence, sn, err)
	}
	return pe, ok, nil
}

// movedAway reports whether device sn, whose session session ended here
// (reason) and whose own entry still names it, is to be removed without
// an offline record: in data-centre mode, a session replaced by another
// (the newer one is in another data centre: one here would have taken
// the entry), or a device online on another session in the fleet's
// hub_presence.
func (tr *Tracker) movedAway(ctx context.Context, sn, session string, reason schema.Reason) (bool, error) {
	if !tr.cfg.Layout.DCMode() {
		return false, nil
	}
	if reason == schema.ReasonReplaced {
		return true, nil
	}
	pe, ok, err := tr.fleetEntry(ctx, sn)
	if err != nil {
		return false, err
	}
	return ok && pe.Session != session, nil
}

// movedAwayAll is movedAway (for node_lost) of a lost node's devices, in
// one batched read of the fleet's hub_presence: the serial numbers of
// those online on another session. Nil in classic mode.
func (tr *Tracker) movedAwayAll(ctx context.Context, victims []*lostVictim) (map[string]bool, error) {
	if !tr.cfg.Layout.DCMode() || len(victims) == 0 {
		return nil, nil
	}
	session := make(map[string]string, len(victims)) // by subject
	keys := make([]string, 0, len(victims))
	for _, v := range victims {
		key, err := subjects.KVKey(schema.BucketPresence, v.sn)
		if err != nil {
			continue
		}
		session[key] = v.entry.Session
		keys = append(keys, key)
	}
	moved := make(map[string]bool)
	prefix := subjects.KVKeys(schema.BucketPresence)
	err := LastMessagesIn(ctx, tr.cfg.Conn, tr.cfg.JSDomain, "KV_"+schema.BucketPresence, keys, func(subj string, _ uint64, h nats.Header, data []byte) {
		if h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "" {
			return
		}
		var pe schema.PresenceEntry
		if json.Unmarshal(data, &pe) == nil && pe.Session != session[subj] {
			moved[subj[len(prefix):]] = true
		}
	})
	if err != nil {
		tr.stores.Lost(schema.BucketPresence, err)
		return nil, fmt.Errorf("presence: %s: %w", schema.BucketPresence, err)
	}
	return moved, nil
}
