package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/nats-io/nats.go/jetstream"
)

// RecordKind is a kind of device record: a status report or an event.
type RecordKind int

// Record kinds, indexes of per-kind arrays.
const (
	KindStatus RecordKind = iota
	KindEvent
	numKinds
)

func (k RecordKind) String() string {
	if k == KindEvent {
		return "event"
	}
	return "status"
}

// Ledger keeps, per device, how many status and event reports were sent
// and the content id of each one the hub acknowledged (answered with code
// 0), so that what the streams hold can be checked against what the hub
// promised: a record the device was told is stored is stored. Safe for
// concurrent use.
type Ledger struct {
	mu   sync.Mutex
	devs map[string]*ledgerDev // Guarded by mu.
}

type ledgerDev struct {
	sent  [numKinds]int
	acked [numKinds][]string
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{devs: map[string]*ledgerDev{}} }

func (l *Ledger) dev(sn string) *ledgerDev {
	d := l.devs[sn]
	if d == nil {
		d = &ledgerDev{}
		l.devs[sn] = d
	}
	return d
}

// Next counts one more report of kind sent by sn and returns its content
// id, unique across the ledger: "<sn>.s<n>" or "<sn>.e<n>".
func (l *Ledger) Next(sn string, k RecordKind) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dev(sn)
	d.sent[k]++
	return sn + "." + k.String()[:1] + strconv.Itoa(d.sent[k])
}

// Acked notes that the report with content id cid was acknowledged.
func (l *Ledger) Acked(sn string, k RecordKind, cid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dev(sn)
	d.acked[k] = append(d.acked[k], cid)
}

// AckedCount returns how many reports of sn were acknowledged, of both
// kinds.
func (l *Ledger) AckedCount(sn string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.devs[sn]
	if d == nil {
		return 0
	}
	return len(d.acked[KindStatus]) + len(d.acked[KindEvent])
}

// MaxSent returns the most reports of kind any one device sent.
func (l *Ledger) MaxSent(k RecordKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, d := range l.devs {
		n = max(n, d.sent[k])
	}
	return n
}

// LedgerCheck is the outcome of checking a ledger against the streams.
type LedgerCheck struct {
	Sent          [numKinds]int `json:"sent"`
	Acked         [numKinds]int `json:"acked"`
	Stored        [numKinds]int `json:"stored"`         // records of the ledger's devices in the streams
	StoredUnacked [numKinds]int `json:"stored_unacked"` // stored, though the device had no code-0 answer
	Missing       int           `json:"missing"`        // acknowledged, not in the stream
	MissingSample []string      `json:"missing_sample,omitempty"`
	Foreign       int           `json:"foreign"` // records without a content id the ledger gave out
}

// Check compares the ledger with stored, the content ids found in each
// kind's stream. The caller must make sure that the streams keep every
// record a device sent (MaxSent against --status-history and
// --event-history): otherwise a missing record may have been aged out
// legitimately.
func (l *Ledger) Check(stored [numKinds]map[string]bool) LedgerCheck {
	l.mu.Lock()
	defer l.mu.Unlock()
	var c LedgerCheck
	acked := map[string]bool{}
	sns := make([]string, 0, len(l.devs))
	for sn := range l.devs {
		sns = append(sns, sn)
	}
	sort.Strings(sns)
	for _, sn := range sns {
		d := l.devs[sn]
		for k := range numKinds {
			c.Sent[k] += d.sent[k]
			c.Acked[k] += len(d.acked[k])
			for _, cid := range d.acked[k] {
				acked[cid] = true
				if !stored[k][cid] {
					c.Missing++
					if len(c.MissingSample) < 10 {
						c.MissingSample = append(c.MissingSample, RecordKind(k).String()+" "+cid)
					}
				}
			}
		}
	}
	for k := range numKinds {
		for cid := range stored[k] {
			c.Stored[k]++
			if !acked[cid] {
				c.StoredUnacked[k]++
			}
		}
	}
	return c
}

// ReadStream calls fn with every message of the stream name, oldest first,
// up to the last one stored when it was called.
func ReadStream(ctx context.Context, js jetstream.JetStream, name string, fn func(subject string, data []byte)) (int, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("loadtest: stream %s: %w", name, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return 0, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, fmt.Errorf("loadtest: read %s: %w", name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("loadtest: read %s: %w", name, err)
	}
	defer it.Stop()
	n := 0
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return n, fmt.Errorf("loadtest: read %s after %d messages: %w", name, n, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return n, fmt.Errorf("loadtest: read %s: %w", name, err)
		}
		fn(m.Subject(), m.Data())
		n++
		if meta.Sequence.Stream >= st.LastSeq {
			return n, nil
		}
	}
}

// StoredRecords reads HUB_STATUS and HUB_EVENTS and returns the content
// ids ("cid" in a status, or in an event's data) of the records of devices
// for which keep returns true; records without one count as foreign.
func StoredRecords(ctx context.Context, js jetstream.JetStream, keep func(sn string) bool) (stored [numKinds]map[string]bool, foreign int, err error) {
	for k, stream := range [numKinds]string{hub.StreamStatus, hub.StreamEvents} {
		stored[k] = map[string]bool{}
		_, err = ReadStream(ctx, js, stream, func(_ string, data []byte) {
			// The fields of hub.StatusRecord and hub.EventRecord that
			// matter here: the serial, and the body holding the id.
			var r struct {
				SN     string          `json:"sn"`
				Status json.RawMessage `json:"status"`
				Data   json.RawMessage `json:"data"`
			}
			if json.Unmarshal(data, &r) != nil || !keep(r.SN) {
				return
			}
			body := r.Status
			if RecordKind(k) == KindEvent {
				body = r.Data
			}
			var id struct {
				CID string `json:"cid"`
			}
			if json.Unmarshal(body, &id) != nil || id.CID == "" {
				foreign++
				return
			}
			stored[k][id.CID] = true
		})
		if err != nil {
			return stored, foreign, err
		}
	}
	return stored, foreign, nil
}

// PresenceHistories reads HUB_PRESENCE and returns each device's records,
// in stream order. Undecodable records are counted, not returned.
func PresenceHistories(ctx context.Context, js jetstream.JetStream) (map[string][]hub.PresenceRecord, int, error) {
	by := map[string][]hub.PresenceRecord{}
	bad := 0
	_, err := ReadStream(ctx, js, hub.StreamPresence, func(_ string, data []byte) {
		var r hub.PresenceRecord
		if json.Unmarshal(data, &r) != nil || r.SN == "" {
			bad++
			return
		}
		by[r.SN] = append(by[r.SN], r)
	})
	return by, bad, err
}

// CheckAlternation reports the first place where a device's presence
// history does not alternate strictly: connected, offline, connected, ...
// starting with connected, every online record of reason connected and
// every offline one of another reason. It returns the index of the record
// at fault (-1 if none) and an error showing the records around it.
func CheckAlternation(h []hub.PresenceRecord) (int, error) {
	for i, r := range h {
		online := i%2 == 0
		switch {
		case r.Online != online:
			return i, fmt.Errorf("record %d of %d is %s, want %s: %s", i+1, len(h), onOff(r.Online), onOff(online), describeRecords(h, i-4, i+3))
		case r.Online && r.Reason != hub.ReasonConnected, !r.Online && r.Reason == hub.ReasonConnected:
			return i, fmt.Errorf("record %d of %d: %s with reason %q: %s", i+1, len(h), onOff(r.Online), r.Reason, describeRecords(h, i-4, i+3))
		}
	}
	return -1, nil
}

// Offline returns the offline records of h.
func Offline(h []hub.PresenceRecord) []hub.PresenceRecord {
	return slices.DeleteFunc(slices.Clone(h), func(r hub.PresenceRecord) bool { return r.Online })
}

// DescribeHistory lists the last 12 records of a presence history.
func DescribeHistory(h []hub.PresenceRecord) string { return describeRecords(h, len(h)-12, len(h)) }

// describeRecords lists h[from:to] (clipped to h) as "#n on connected
// node at", numbered from 1, at in the node's clock (UTC).
func describeRecords(h []hub.PresenceRecord, from, to int) string {
	from, to = max(0, from), min(len(h), to)
	b := []byte{}
	for i := from; i < to; i++ {
		r := h[i]
		if i > from {
			b = append(b, ", "...)
		}
		b = fmt.Appendf(b, "#%d %s %s %s %s", i+1, onOff(r.Online), r.Reason, r.Node, time.UnixMilli(r.At).UTC().Format("15:04:05.000"))
	}
	return string(b)
}

func onOff(online bool) string {
	if online {
		return "on"
	}
	return "off"
}
