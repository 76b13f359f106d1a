package hub

import (
	"context"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// upkeep refreshes this node's liveness entry every third of the node TTL
// and each local device's entry shortly before its presence TTL, in small
// asynchronous batches spread over time: its cost grows with the devices,
// not with how often they ping.
func (p *presence) upkeep(ctx context.Context) {
	beat := time.NewTicker(p.srv.cfg.NodeTTL / 3)
	defer beat.Stop()
	// Sweeps every second, or more often when a short TTL leaves less
	// margin than that.
	sweep := time.NewTicker(min(time.Second, refreshAfter(p.srv.cfg.PresenceTTL)/4))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			hctx, cancel := context.WithTimeout(ctx, p.srv.cfg.NodeTTL/3)
			if err := p.heartbeat(hctx); err != nil {
				p.srv.log.Warn("node liveness not refreshed", "err", err)
			}
			cancel()
		case <-sweep.C:
			p.refresh()
		}
	}
}

// maxRefreshPerSweep bounds one sweep's writes; at one sweep a second it
// keeps 400,000 devices refreshed at the default two-minute TTL.
const maxRefreshPerSweep = 4000

// refreshAfter is how long after its last write an entry is refreshed:
// the TTL less a margin for a late sweep or a slow write (a tenth of the
// TTL, at least a third of it or 3 s for short test TTLs). At the default
// 2m TTL an entry is written every 108 s.
func refreshAfter(ttl time.Duration) time.Duration {
	return ttl - max(ttl/10, min(ttl/3, 3*time.Second))
}

// refresh rewrites the entries due for it, each only if it is still the
// one this node wrote (a compare-and-set on its revision), asynchronously.
// Entries fall due spread out: connected gives each a random first
// refresh within the interval (see connected), so devices that connected
// together do not refresh together. A write that could not be sent is
// tried again a second later.
func (p *presence) refresh() {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	now := p.srv.cfg.Now()
	next := now.Add(refreshAfter(p.srv.cfg.PresenceTTL)).UnixNano()
	nowMs, nowNs := now.UnixMilli(), now.UnixNano()
	enc := &p.enc
	enc.buf, enc.ends, enc.revs, enc.lds = enc.buf[:0], enc.ends[:0], enc.revs[:0], enc.lds[:0]
	p.mu.Lock()
	// Only the entries due are touched: the queue is ordered by refresh
	// time, so a sweep costs what it writes, not what the node holds. The
	// entries are encoded into one buffer, with no allocation per entry.
	for len(p.due) > 0 && p.due[0].at <= nowNs && len(enc.ends) < maxRefreshPerSweep {
		ld := p.due[0].ld
		p.due.pop()
		if ld.dropped || ld.gone {
			continue // ended or replaced since it was queued
		}
		e := p.entryOf(ld, nowMs)
		enc.buf = appendPresenceEntry(enc.buf, &e)
		enc.ends = append(enc.ends, len(enc.buf))
		enc.revs = append(enc.revs, ld.rev)
		enc.lds = append(enc.lds, ld)
	}
	p.mu.Unlock()
	// Published without waiting for acknowledgements: the bucket checks
	// each write against the revision it names, and this node learns the
	// new revision from its own watcher (see refreshed), as every node
	// learns of every write. A write the bucket refuses means the entry
	// changed (the watcher says how) or is gone (the watcher sees the
	// removal, and the entry is put back).
	m := &enc.msg
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	rev, vals := make([]byte, 0, 20), []string{""}
	m.Header[jetstream.ExpectedLastSubjSeqHeader] = vals
	from, sent := 0, 0
	for i, end := range enc.ends {
		m.Subject = presenceSubjectPrefix + enc.lds[i].id.SN
		m.Data = enc.buf[from:end]
		from = end
		vals[0] = string(strconv.AppendUint(rev[:0], enc.revs[i], 10))
		if err := p.srv.nc.PublishMsg(m); err != nil {
			p.srv.log.Warn("presence refreshes not sent, trying again in a second", "err", err, "entries", len(enc.ends)-i)
			break
		}
		sent++
	}
	m.Data = nil
	retry := now.Add(time.Second).UnixNano()
	p.mu.Lock()
	for i, ld := range enc.lds {
		at := next
		if i >= sent {
			at = retry
		}
		p.due.push(dueItem{at: at, ld: ld})
		enc.lds[i] = nil
	}
	p.mu.Unlock()
	p.srv.metrics.presenceWrites.Add(float64(sent))
}

// presenceSubjectPrefix is that of hub_presence's entries.
var presenceSubjectPrefix = subjects.KVKeys(BucketPresence)

// refreshEncoder holds refresh's buffers, kept from sweep to sweep.
type refreshEncoder struct {
	buf  []byte         // the entries, one after the other
	ends []int          // per write: where its entry ends in buf
	revs []uint64       // per write: the revision it replaces
	lds  []*localDevice // per write: whose entry it is
	msg  nats.Msg
}

// appendPresenceEntry appends e as JSON, as encoding/json writes it
// (without its HTML escaping, which JSON readers do not need).
func appendPresenceEntry(b []byte, e *PresenceEntry) []byte {
	b = append(b, `{"node":`...)
	b = appendJSONString(b, e.Node)
	b = append(b, `,"session":`...)
	b = appendJSONString(b, e.Session)
	b = append(b, `,"since":`...)
	b = strconv.AppendInt(b, e.Since, 10)
	b = append(b, `,"last_seen":`...)
	b = strconv.AppendInt(b, e.LastSeen, 10)
	b = append(b, `,"addr":`...)
	b = appendJSONString(b, e.Addr)
	if e.Type != "" {
		b = append(b, `,"type":`...)
		b = appendJSONString(b, e.Type)
	}
	if e.Group != "" {
		b = append(b, `,"group":`...)
		b = appendJSONString(b, e.Group)
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and
// U+2029 escaped, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// dueItem is a local entry's next refresh, at a time in Unix nanoseconds.
type dueItem struct {
	at int64
	ld *localDevice
}

// dueQueue is a min-heap of refreshes by time. Items of devices that ended
// or were replaced stay until they come up, and are skipped then.
type dueQueue []dueItem

func (q *dueQueue) push(it dueItem) {
	*q = append(*q, it)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if h[parent].at <= h[i].at {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

// pop removes the earliest item.
func (q *dueQueue) pop() {
	h := *q
	n := len(h) - 1
	h[0] = h[n]
	h[n] = dueItem{}
	*q = h[:n]
	q.down(0)
}

func (q dueQueue) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(q) {
			return
		}
		least := l
		if r := l + 1; r < len(q) && q[r].at < q[l].at {
			least = r
		}
		if q[i].at <= q[least].at {
			return
		}
		q[i], q[least] = q[least], q[i]
		i = least
	}
}
