package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lastRecord is what a device's last presence record says: its stream
// sequence (0: there is none), whether it says online, and the record.
type lastRecord struct {
	seq    uint64
	online bool
	msgID  string // its Nats-Msg-Id
	data   []byte
}

// says reports whether the last record already states online (or, for
// offline, whether there is no record at all: a device never reported
// online needs no offline record).
func (l lastRecord) says(online bool) bool {
	if l.seq == 0 {
		return !online
	}
	return l.online == online
}

// record makes r (connected or offline) the device's last record in
// HUB_PRESENCE, unless the last one already says the same: that keeps the
// history alternating, whoever else writes and whatever earlier attempts
// did. The last record is read back from the stream (a direct get), and r
// appended only if it is still the last (a compare-and-set on the
// subject's last sequence); a failed check reads it again and decides
// again. One attempt: an error (a timeout, which may have stored the
// record all the same) is for the caller to retry, and the retry reads
// back what the first one did. msgID (under the Nats-Msg-Id header) lets
// the stream drop the same record written by two nodes.
//
// Once stored, the record goes to the record sink (the hub sends it to
// the nodes whose sessions watch the device), once: by the tracker whose
// append stored it. A retry that finds stored the append this tracker
// never heard back about (its id is the last record's, and the id is
// unsure) hands it over then; one whose id is the last record's without
// being unsure here found another node's append of the same record (a
// device recorded back by the node that expired it, with the id of the
// connected record its new node stored), which that node handed over.
func (tr *Tracker) record(ctx context.Context, r schema.PresenceRecord, msgID string) error {
	return tr.recordAfter(ctx, r, msgID, nil)
}

// recordSize is room for a presence record of the usual lengths.
const recordSize = 160

// recordAfter is record, its first attempt taking read (when set) as the
// device's last record instead of reading it: the caller read it already.
// The append's compare-and-set makes a read that is out of date harmless.
func (tr *Tracker) recordAfter(ctx context.Context, r schema.PresenceRecord, msgID string, read *lastRecord) error {
	subj, err := tr.cfg.Layout.PresenceSubject(r.SN)
	if err != nil {
		return nil // no such subject: no record can be kept for it
	}
	id := r.SN + "/" + msgID
	for range QuickRetries {
		last := lastRecord{}
		if read != nil {
			last, read = *read, nil
		} else if last, err = tr.readRecord(ctx, r.SN, subj); err != nil {
			return err
		}
		if last.says(r.Online) {
			if tr.settleUnsure(id) && last.msgID == id && last.data != nil {
				// This record, stored by an attempt whose answer was lost.
				tr.stored(r, last.seq, last.data)
			}
			return nil
		}
		b := AppendRecord(make([]byte, 0, recordSize), &r)
		ack, err := tr.appendRecord(ctx, subj, b, id, last.seq)
		if err == nil {
			// A duplicate is this tracker's earlier append, whose answer
			// was lost, or another node's, which that node handed over.
			if unsure := tr.settleUnsure(id); !ack.Duplicate || unsure {
				tr.stored(r, ack.Sequence, b)
			}
			return nil
		}
		if !IsWrongLastSeq(err) {
			tr.markUnsure(id) // it may be stored all the same
			tr.stores.Lost(tr.cfg.Layout.PresenceStream(), err)
			return fmt.Errorf("presence: record of %s: %w", r.SN, err)
		}
		// Another record came first: look again.
	}
	return ErrContended
}

// markUnsure notes that the append of record id got no answer: it may be
// stored.
func (tr *Tracker) markUnsure(id string) {
	tr.mu.Lock()
	tr.unsure[id] = struct{}{}
	tr.mu.Unlock()
}

// settleUnsure forgets id's unsure append, and reports whether there was
// one.
func (tr *Tracker) settleUnsure(id string) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	_, ok := tr.unsure[id]
	delete(tr.unsure, id)
	return ok
}

// stored runs once per record this node appended to HUB_PRESENCE: the
// record sink gets it (the hub counts it and sends it to the watchers of
// its device).
func (tr *Tracker) stored(r schema.PresenceRecord, seq uint64, data []byte) {
	if tr.cfg.Stored != nil {
		tr.cfg.Stored(r, seq, data)
	}
}

// readRecord reads the device's last record back from HUB_PRESENCE.
func (tr *Tracker) readRecord(ctx context.Context, sn, subj string) (lastRecord, error) {
	m, err := tr.records.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return lastRecord{}, nil
	}
	if err != nil {
		tr.stores.Lost(tr.cfg.Layout.PresenceStream(), err)
		return lastRecord{}, fmt.Errorf("presence: last presence record of %s: %w", sn, err)
	}
	var r struct {
		Online bool `json:"online"`
	}
	_ = json.Unmarshal(m.Data, &r) // a record that does not say online says offline
	return lastRecord{seq: m.Sequence, online: r.Online, msgID: m.Header.Get(jetstream.MsgIDHeader), data: m.Data}, nil
}

// appendRecord stores the record b if the subject's last record is at
// sequence after (0: none).
func (tr *Tracker) appendRecord(ctx context.Context, subj string, b []byte, msgID string, after uint64) (*jetstream.PubAck, error) {
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(after, 10))
	return tr.cfg.JS.PublishMsg(ctx, m)
}
