package presence

import (
	"context"
	"encoding/json"
	"github.com/fleethub/fleethub/hub/schema"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The first pass of node_lost over a lost node's devices, pipelined: a
// node that held 10,000 devices is reported in a few dozen round trips,
// not tens of thousands. Per chunk of devices: their entries in one
// batched direct get, their last records in another, the offline records
// published together, then (once each is stored: an offline record
// always comes before its entry's removal) the removals together. Every
// write keeps its compare-and-set, so what changed meanwhile is refused;
// whatever the pass did not settle is left to the per-device steps (see
// lostDevice), which read the state again and do what is left.

// lostChunk is how many devices one pass of bulkLost takes at once: under
// the 1,024 answers a batched direct get gives.
const lostChunk = 500 // at most presence.MaxBatch

// bulkLost reports offline with node_lost the devices sns of lost's index
// whose entries still name lost, and returns the steps left for those it
// did not settle.
func (tr *Tracker) bulkLost(lost string, sns []string) []step {
	var left []step
	for from := 0; from < len(sns); from += lostChunk {
		chunk := sns[from:min(from+lostChunk, len(sns))]
		ctx, cancel := context.WithTimeout(tr.runCtx, CallTimeout)
		left = append(left, tr.bulkLostChunk(ctx, lost, chunk)...)
		cancel()
	}
	return left
}

// lostVictim is a device of a lost node on its way through bulkLost.
type lostVictim struct {
	sn    string
	entry schema.PresenceEntry
	rev   uint64 // the entry's revision
	last  lastRecord
	rec   []byte
	ack   jetstream.PubAckFuture
}

func (tr *Tracker) bulkLostChunk(ctx context.Context, lost string, sns []string) []step {
	fallback := func(sns []string) []step {
		steps := make([]step, len(sns))
		for i, sn := range sns {
			steps[i] = tr.lostDevice(sn, lost, nil)
		}
		return steps
	}
	// The entries: a device whose entry is gone, or names another node,
	// is settled.
	entrySubj := make([]string, len(sns))
	for i, sn := range sns {
		entrySubj[i] = tr.entryPrefix + sn
	}
	var victims []*lostVictim
	err := LastMessagesIn(ctx, tr.cfg.Conn, tr.cfg.JSDomain, "KV_"+tr.cfg.Layout.Presence(), entrySubj, func(subj string, seq uint64, h nats.Header, data []byte) {
		if h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "" {
			return // removed
		}
		v := &lostVictim{sn: subj[len(tr.entryPrefix):], rev: seq}
		if json.Unmarshal(data, &v.entry) == nil && v.entry.Node == lost {
			victims = append(victims, v)
		}
	})
	if err != nil {
		tr.stores.Lost(tr.cfg.Layout.Presence(), err)
		return fallback(sns)
	}
	if len(victims) == 0 {
		return nil
	}
	// Their last records.
	recSubj := make([]string, len(victims))
	bySubj := make(map[string]*lostVictim, len(victims))
	for i, v := range victims {
		subj, err := tr.cfg.Layout.PresenceSubject(v.sn)
		if err != nil {
			return fallback(sns)
		}
		recSubj[i], bySubj[subj] = subj, v
	}
	err = LastMessagesIn(ctx, tr.cfg.Conn, tr.cfg.JSDomain, tr.cfg.Layout.PresenceStream(), recSubj, func(subj string, seq uint64, h nats.Header, data []byte) {
		if v := bySubj[subj]; v != nil {
			var r struct {
				Online bool `json:"online"`
			}
			_ = json.Unmarshal(data, &r)
			v.last = lastRecord{seq: seq, online: r.Online}
		}
	})
	if err != nil {
		tr.stores.Lost(tr.cfg.Layout.PresenceStream(), err)
		return fallback(sns)
	}
	// In data-centre mode, the devices online again on another session
	// (in another data centre: see movedAway) get no record; their
	// entries here go.
	moved, err := tr.movedAwayAll(ctx, victims)
	if err != nil {
		return fallback(sns)
	}
	var left []step
	at := tr.now().UnixMilli()
	// The offline records, where the last record does not say so.
	for i, v := range victims {
		if v.last.says(false) || moved[v.sn] {
			continue
		}
		r := schema.PresenceRecord{SN: v.sn, Type: v.entry.Type, Group: v.entry.Group, Online: false, Reason: schema.ReasonNodeLost, Node: lost, At: at}
		v.rec = AppendRecord(make([]byte, 0, recordSize), &r)
		m := nats.NewMsg(recSubj[i])
		m.Data = v.rec
		m.Header.Set(jetstream.MsgIDHeader, v.sn+"/"+v.entry.Session+"/off")
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(v.last.seq, 10))
		if v.ack, err = tr.pubJS.PublishMsgAsync(m); err != nil {
			v.ack = nil
		}
	}
	stored := victims[:0]
	for i, v := range victims {
		id := v.sn + "/" + v.entry.Session + "/off"
		switch {
		case v.rec == nil:
			stored = append(stored, v) // said offline already
		case v.ack == nil:
			left = append(left, tr.expiryStep(v.sn, v.entry.Session, schema.ReasonNodeLost, nil, false, false))
		default:
			select {
			case ack := <-v.ack.Ok():
				if unsure := tr.settleUnsure(id); !ack.Duplicate || unsure {
					tr.stored(schema.PresenceRecord{SN: v.sn, Type: v.entry.Type, Group: v.entry.Group, Reason: schema.ReasonNodeLost}, ack.Sequence, v.rec)
				}
				stored = append(stored, v)
			case err := <-v.ack.Err():
				// Refused (another record came first) or unknown: the
				// step reads again. The record may be stored: should the
				// device be back by then, it is recorded back.
				if !IsWrongLastSeq(err) {
					tr.markUnsure(id)
				}
				left = append(left, tr.expiryStep(v.sn, v.entry.Session, schema.ReasonNodeLost, nil, false, true))
			case <-ctx.Done():
				// The appends not heard back about may be stored.
				for _, w := range victims[i:] {
					if w.rec != nil && w.ack != nil {
						tr.markUnsure(w.sn + "/" + w.entry.Session + "/off")
					}
				}
				return append(left, fallback(sns)...)
			}
		}
	}
	// The removals, each checked against the revision read.
	for _, v := range stored {
		m := nats.NewMsg(tr.entryPrefix + v.sn)
		m.Header.Set("KV-Operation", "DEL")
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(v.rev, 10))
		if v.ack, err = tr.pubJS.PublishMsgAsync(m); err != nil {
			v.ack = nil
		}
	}
	for _, v := range stored {
		if v.ack == nil {
			left = append(left, tr.lostAfterRecord(v.sn, v.entry.Session))
			continue
		}
		select {
		case <-v.ack.Ok():
		case <-v.ack.Err():
			// The entry changed after its offline record (the device came
			// back), or the answer was lost: the step looks again.
			left = append(left, tr.lostAfterRecord(v.sn, v.entry.Session))
		case <-ctx.Done():
			return append(left, fallback(sns)...)
		}
	}
	return left
}

// lostAfterRecord is the step left for a device whose offline record is
// stored (or was already) but whose entry was not removed: it removes the
// entry if it still names session, or records the device back if a newer
// session wrote it.
func (tr *Tracker) lostAfterRecord(sn, session string) step {
	return tr.expiryStep(sn, session, schema.ReasonNodeLost, nil, true, false)
}
