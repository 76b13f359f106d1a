package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fleethub/fleethub/auth"
	"strconv"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// onRecord follows the HUB_PRESENCE stream: the view learns when a device
// went offline, and what its last record says.
func (p *presence) onRecord(data []byte, seq uint64) {
	var r PresenceRecord
	if err := json.Unmarshal(data, &r); err != nil || !validPresence(&r) {
		p.srv.metrics.pushesDropped.WithLabelValues(dropInvalidRecord).Inc()
		return
	}
	p.mu.Lock()
	v := p.viewLocked(r.SN)
	if r.Type != "" {
		v.typ, v.group = r.Type, r.Group
	}
	if !r.Online {
		v.offlineSince = r.At
	}
	if seq > v.recSeq {
		v.recSeq, v.recOnline = seq, r.Online
	}
	p.mu.Unlock()
	p.srv.metrics.presence.WithLabelValues(string(r.Reason)).Inc()
	// Subscribed sessions get the record from its watch subject
	// (Server.onWatch), published by the node that appended it.
}

// validPresence reports whether a record read back from HUB_PRESENCE is one
// a hub could have stored: any writer of the stream may store others, and
// those neither change the view nor reach admins (nor add a reason label).
func validPresence(r *PresenceRecord) bool { return r.Reason.Known() && auth.ValidSerial(r.SN) }

// lastRecord is what a device's last presence record says: its stream
// sequence (0: there is none) and whether it says online.
type lastRecord struct {
	seq    uint64
	online bool
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

// viewRecord is the device's last record as the view has it.
func (p *presence) viewRecord(sn string) lastRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.view[sn]; v != nil {
		return lastRecord{v.recSeq, v.recOnline}
	}
	return lastRecord{}
}

// noteRecord tells the view of a record this node stored or read back.
func (p *presence) noteRecord(sn string, l lastRecord) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.viewLocked(sn); l.seq > v.recSeq {
		v.recSeq, v.recOnline = l.seq, l.online
	}
}

// forgetRecords runs when HUB_PRESENCE was created again: the sequences
// the view has belong to the stream that is gone.
func (p *presence) forgetRecords() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.view {
		v.recSeq, v.recOnline = 0, false
	}
}

// record makes r (connected or offline) the device's last record in
// HUB_PRESENCE, unless the last one already says the same: that keeps the
// history alternating, whoever else writes and whatever earlier attempts
// did. The record is appended only if the device's last record is still
// the one decided on (a compare-and-set on the subject's last sequence):
// first the view's, which costs no round trip but may lag; when that one
// says the same as r, or the stream has another, the last record is read
// back from the stream and the decision made again. One attempt: an error
// (a timeout, which may have stored the record all the same) is for the
// caller to retry, and the retry reads back what the first one did. msgID
// (under the Nats-Msg-Id header) lets the stream drop the same record
// written by two nodes.
func (p *presence) record(ctx context.Context, r PresenceRecord, msgID string) error {
	subj, err := subjects.Presence(r.SN)
	if err != nil {
		return nil // no such subject: no record can be kept for it
	}
	last, read := p.viewRecord(r.SN), false
	for range quickRetries {
		if !read && last.says(r.Online) {
			if last, err = p.readRecord(ctx, r.SN, subj); err != nil {
				return err
			}
			read = true
		}
		if last.says(r.Online) {
			return nil
		}
		seq, dup, err := p.appendRecord(ctx, subj, r, msgID, last.seq)
		if err == nil {
			p.noteRecord(r.SN, lastRecord{seq, r.Online})
			// Watch: the stored record, and only it, goes to the nodes
			// whose sessions watch the device; a duplicate the stream
			// dropped was published by the node that stored it.
			if !dup {
				b, _ := json.Marshal(r)
				p.srv.publishWatchID(subjects.WatchPresence, r.Group, r.Type, r.SN, fmt.Sprintf("p%d", seq), b)
			}
			return nil
		}
		if !isWrongLastSeq(err) {
			p.srv.stores.lost(StreamPresence, err)
			return fmt.Errorf("hub: presence record of %s: %w", r.SN, err)
		}
		// Another record came first, or the view lagged: look again.
		if last, err = p.readRecord(ctx, r.SN, subj); err != nil {
			return err
		}
		read = true
	}
	return errPresenceContended
}

// readRecord reads the device's last record back from HUB_PRESENCE.
func (p *presence) readRecord(ctx context.Context, sn, subj string) (lastRecord, error) {
	m, err := p.records.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return lastRecord{}, nil
	}
	if err != nil {
		p.srv.stores.lost(StreamPresence, err)
		return lastRecord{}, fmt.Errorf("hub: last presence record of %s: %w", sn, err)
	}
	var r struct {
		Online bool `json:"online"`
	}
	_ = json.Unmarshal(m.Data, &r) // a record that does not say online says offline
	l := lastRecord{m.Sequence, r.Online}
	p.noteRecord(sn, l)
	return l, nil
}

// appendRecord stores r if the subject's last record is at sequence after
// (0: none), and returns its sequence; dup reports that the stream had it
// already (the same Nats-Msg-Id within its window).
func (p *presence) appendRecord(ctx context.Context, subj string, r PresenceRecord, msgID string, after uint64) (seq uint64, dup bool, err error) {
	b, _ := json.Marshal(r)
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, r.SN+"/"+msgID)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(after, 10))
	ack, err := p.srv.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, false, err
	}
	return ack.Sequence, ack.Duplicate, nil
}
