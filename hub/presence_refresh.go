package hub

import (
	"context"
	"strconv"
	"time"

	pres "github.com/fleethub/fleethub/hub/presence"
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

// refreshAfter is how long after its last write an entry is refreshed
// (see presence.RefreshAfter).
func refreshAfter(ttl time.Duration) time.Duration { return pres.RefreshAfter(ttl) }

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
	for p.due.Len() > 0 && p.due.Peek().At <= nowNs && len(enc.ends) < maxRefreshPerSweep {
		it := p.due.Pop()
		ld := it.Item
		if ld.dropped || ld.gone || ld.dueAt != it.At {
			continue // ended, replaced or queued again since
		}
		e := p.entryOf(ld, nowMs)
		enc.buf = pres.AppendEntry(enc.buf, &e)
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
	p.due.Push(pres.Due[*localDevice]{At: at, Item: ld})
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
