package presence

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// upkeep refreshes this node's liveness entry every third of the node TTL
// and each local device's entry shortly before its presence TTL, in small
// asynchronous batches spread over time: its cost grows with the devices,
// not with how often they ping.
func (tr *Tracker) upkeep(ctx context.Context) {
	beat := tr.ticker(tr.cfg.NodeTTL / 3)
	defer beat.stop()
	// Sweeps every second, or more often when a short TTL leaves less
	// margin than that.
	sweep := tr.ticker(min(time.Second, RefreshAfter(tr.cfg.PresenceTTL)/4))
	defer sweep.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.c:
			beat.rearm()
			hctx, cancel := context.WithTimeout(ctx, tr.cfg.NodeTTL/3)
			if err := tr.heartbeat(hctx); err != nil {
				tr.log.Warn("node liveness not refreshed", "err", err)
			}
			cancel()
		case <-sweep.c:
			sweep.rearm()
			tr.refresh()
		}
	}
}

// ticker ticks every period on the tracker's clock: a tick that finds
// the last one unread is dropped, as a time.Ticker's is; the reader
// rearms it for the next.
type ticker struct {
	clock  Clock
	period time.Duration
	c      chan struct{}
	mu     sync.Mutex
	timer  Timer     // Guarded by mu.
	next   time.Time // when the pending tick is due. Guarded by mu.
}

func (tr *Tracker) ticker(period time.Duration) *ticker {
	tk := &ticker{clock: tr.cfg.Clock, period: period, c: make(chan struct{}, 1)}
	tk.mu.Lock()
	tk.next = tk.clock.Now()
	tk.armLocked()
	tk.mu.Unlock()
	return tk
}

// armLocked queues the tick after next, keeping the period's phase.
func (tk *ticker) armLocked() {
	tk.next = tk.next.Add(tk.period)
	if now := tk.clock.Now(); tk.next.Before(now) {
		tk.next = now // a tick came late: the next one a period after it
	}
	tk.timer = tk.clock.AfterFunc(tk.next.Sub(tk.clock.Now()), func() {
		select {
		case tk.c <- struct{}{}:
		default:
		}
	})
}

// rearm queues the next tick, once the last has been read.
func (tk *ticker) rearm() {
	tk.mu.Lock()
	tk.armLocked()
	tk.mu.Unlock()
}

func (tk *ticker) stop() {
	tk.mu.Lock()
	tk.timer.Stop()
	tk.mu.Unlock()
}

// maxRefreshPerSweep bounds one sweep's writes; at one sweep a second it
// keeps 400,000 devices refreshed at the default two-minute TTL.
const maxRefreshPerSweep = 4000

// refresh rewrites the entries due for it, each only if it is still the
// one this node wrote (a compare-and-set on its revision), published
// without waiting: the acknowledgements are read by a task of their own
// (see settle). Entries fall due spread out: connected gives each a random
// first refresh within the interval (see connected), so devices that
// connected together do not refresh together. A write that could not be
// sent is tried again a second later.
func (tr *Tracker) refresh() {
	tr.refreshMu.Lock()
	defer tr.refreshMu.Unlock()
	now := tr.now()
	next := now.Add(RefreshAfter(tr.cfg.PresenceTTL)).UnixNano()
	nowMs, nowNs := now.UnixMilli(), now.UnixNano()
	enc := &tr.enc
	enc.buf, enc.ends, enc.revs, enc.lds = enc.buf[:0], enc.ends[:0], enc.revs[:0], enc.lds[:0]
	tr.mu.Lock()
	// Only the entries due are touched: the queue is ordered by refresh
	// time, so a sweep costs what it writes, not what the node holds.
	for tr.due.Len() > 0 && tr.due.Peek().At <= nowNs && len(enc.ends) < maxRefreshPerSweep {
		it := tr.due.Pop()
		ld := it.Item
		if ld.dropped || ld.gone || ld.dueAt != it.At {
			continue // ended, replaced or queued again since
		}
		e := tr.entryOf(ld, nowMs)
		enc.buf = AppendEntry(enc.buf, &e)
		enc.ends = append(enc.ends, len(enc.buf))
		enc.revs = append(enc.revs, ld.rev)
		enc.lds = append(enc.lds, ld)
	}
	tr.mu.Unlock()
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
			Subject: tr.entryPrefix + enc.lds[i].dev.SN,
			Data:    append([]byte(nil), enc.buf[from:end]...), // the publisher may send it again
			Header:  nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(enc.revs[i], 10)}},
		}
		from = end
		f, err := tr.pubJS.PublishMsgAsync(m)
		if err != nil {
			tr.log.Warn("presence refreshes not sent, trying again in a second", "err", err, "entries", len(enc.ends)-i)
			break
		}
		writes = append(writes, refreshWrite{ld: enc.lds[i], rev: enc.revs[i], ack: f})
		sent++
	}
	retry := now.Add(time.Second).UnixNano()
	tr.mu.Lock()
	for i, ld := range enc.lds {
		at := tr.nextRefresh(ld, now, time.Unix(0, next)).UnixNano()
		if i >= sent {
			at = retry
		}
		tr.schedule(ld, at)
		enc.lds[i] = nil
	}
	tr.mu.Unlock()
	tr.metrics.Refreshed(sent)
	if len(writes) > 0 && !tr.cfg.Go(func() { tr.settle(writes) }) {
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
func (tr *Tracker) settle(writes []refreshWrite) {
	timeout := time.NewTimer(CallTimeout)
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
			tr.mu.Lock()
			if w.ld.rev == w.rev {
				w.ld.rev = ack.Sequence
			}
			tr.mu.Unlock()
		case err := <-w.ack.Err():
			if IsWrongLastSeq(err) {
				refused = append(refused, w)
			} else {
				unknown = append(unknown, w)
			}
		case <-timeout.C:
			timedOut = true
			unknown = append(unknown, w)
		case <-tr.runCtx.Done():
			return
		}
	}
	if len(unknown) > 0 {
		retry := tr.now().Add(time.Second).UnixNano()
		tr.mu.Lock()
		for _, w := range unknown {
			if !w.ld.dropped && !w.ld.gone && w.ld.rev == w.rev {
				tr.schedule(w.ld, retry)
			}
		}
		tr.mu.Unlock()
	}
	steps := make([]step, len(refused))
	for i, w := range refused {
		steps[i] = tr.repairing(w.ld.dev.SN, w.ld)
	}
	tr.retry("repair", steps...)
}

// schedule queues ld's next refresh at at (Unix nanoseconds), replacing
// the one it had. Caller holds tr.mu.
func (tr *Tracker) schedule(ld *localDevice, at int64) {
	ld.dueAt = at
	tr.due.Push(Due[*localDevice]{At: at, Item: ld})
}

// refreshEncoder holds refresh's buffers, kept from sweep to sweep.
type refreshEncoder struct {
	buf  []byte         // the entries, one after the other
	ends []int          // per write: where its entry ends in buf
	revs []uint64       // per write: the revision it replaces
	lds  []*localDevice // per write: whose entry it is
}
