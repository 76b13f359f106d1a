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
// one this node wrote (a compare-and-set on its revision), published
// without waiting: the acknowledgements are read by a task of their own
// (see settle). Entries fall due spread out: connected gives each a random
// first refresh within the interval (see connected), so devices that
// connected together do not refresh together. A write that could not be
// sent is tried again a second later.
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
	// time, so a sweep costs what it writes, not what the node holds.
	for len(p.due) > 0 && p.due[0].at <= nowNs && len(enc.ends) < maxRefreshPerSweep {
		it := p.due[0]
		p.due.pop()
		ld := it.ld
		if ld.dropped || ld.gone || ld.dueAt != it.at {
			continue // ended, replaced or queued again since
		}
		e := p.entryOf(ld, nowMs)
		enc.buf = appendPresenceEntry(enc.buf, &e)
		enc.ends = append(enc.ends, len(enc.buf))
		enc.revs = append(enc.revs, ld.rev)
		enc.lds = append(enc.lds, ld)
	}
	p.mu.Unlock()
	if len(enc.lds) == 0 {
		return
	}
	// Each write names the revision it replaces. Its acknowledgement
	// gives the new one; a refusal means the entry changed under this
	// node (another session took it, or it is gone), and is looked at.
	writes := make([]refreshWrite, 0, len(enc.lds))
	from, sent := 0, 0
	for i, end := range enc.ends {
		m := &nats.Msg{
			Subject: presenceSubjectPrefix + enc.lds[i].id.SN,
			Data:    append([]byte(nil), enc.buf[from:end]...), // the publisher may send it again
			Header:  nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(enc.revs[i], 10)}},
		}
		from = end
		f, err := p.pubJS.PublishMsgAsync(m)
		if err != nil {
			p.srv.log.Warn("presence refreshes not sent, trying again in a second", "err", err, "entries", len(enc.ends)-i)
			break
		}
		writes = append(writes, refreshWrite{ld: enc.lds[i], rev: enc.revs[i], ack: f})
		sent++
	}
	retry := now.Add(time.Second).UnixNano()
	p.mu.Lock()
	for i, ld := range enc.lds {
		at := next
		if i >= sent {
			at = retry
		}
		p.schedule(ld, at)
		enc.lds[i] = nil
	}
	p.mu.Unlock()
	p.srv.metrics.presenceWrites.Add(float64(sent))
	if len(writes) > 0 && !p.srv.goTask(func() { p.settle(writes) }) {
		return // stopping
	}
}

// refreshWrite is a refresh sent, waiting for its acknowledgement.
type refreshWrite struct {
	ld  *localDevice
	rev uint64 // the revision it replaces
	ack jetstream.PubAckFuture
}

// settle reads the acknowledgements of a sweep's refreshes. Stored: the
// entry's new revision is the one the next refresh checks against.
// Refused for its revision: the entry changed under this node, and repair
// looks at it. No answer (NATS is slow, or the node is cut off): the write
// may have taken effect or not, so it is tried again in a second, against
// the same revision; should it have taken effect, that retry is refused,
// and repair reads the entry's revision back.
func (p *presence) settle(writes []refreshWrite) {
	timeout := time.NewTimer(presenceCallTimeout)
	defer timeout.Stop()
	var refused, unknown []refreshWrite
	timedOut := false
	for _, w := range writes {
		if timedOut {
			unknown = append(unknown, w)
			continue
		}
		select {
		case ack := <-w.ack.Ok():
			p.mu.Lock()
			if w.ld.rev == w.rev {
				w.ld.rev = ack.Sequence
			}
			p.mu.Unlock()
		case err := <-w.ack.Err():
			if isWrongLastSeq(err) {
				refused = append(refused, w)
			} else {
				unknown = append(unknown, w)
			}
		case <-timeout.C:
			timedOut = true
			unknown = append(unknown, w)
		case <-p.srv.runCtx.Done():
			return
		}
	}
	if len(unknown) > 0 {
		retry := p.srv.cfg.Now().Add(time.Second).UnixNano()
		p.mu.Lock()
		for _, w := range unknown {
			if !w.ld.dropped && !w.ld.gone && w.ld.rev == w.rev {
				p.schedule(w.ld, retry)
			}
		}
		p.mu.Unlock()
	}
	steps := make([]step, len(refused))
	for i, w := range refused {
		steps[i] = p.repairing(w.ld.id.SN, w.ld)
	}
	p.retry("repair", steps...)
}

// schedule queues ld's next refresh at at (Unix nanoseconds), replacing
// the one it had. Caller holds p.mu.
func (p *presence) schedule(ld *localDevice, at int64) {
	ld.dueAt = at
	p.due.push(dueItem{at: at, ld: ld})
}

// presenceSubjectPrefix is that of hub_presence's entries.
var presenceSubjectPrefix = subjects.KVKeys(BucketPresence)

// refreshEncoder holds refresh's buffers, kept from sweep to sweep.
type refreshEncoder struct {
	buf  []byte         // the entries, one after the other
	ends []int          // per write: where its entry ends in buf
	revs []uint64       // per write: the revision it replaces
	lds  []*localDevice // per write: whose entry it is
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
// or were replaced, or that were queued again, stay until they come up,
// and are skipped then.
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
