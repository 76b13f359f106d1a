package fleetsim

import (
	"container/heap"
	"context"
	"math"
	"time"
)

// Item kinds in the schedule.
const (
	kindConnect uint8 = iota
	kindRefresh
	kindStatus
	kindEvent
)

type dueItem struct {
	at   int64 // unix ns
	dev  int32
	kind uint8
	gen  uint32 // for refresh: the session it belongs to
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func (s *Sim) schedule(it dueItem) { heap.Push(&s.due, it) }

// Run plays the fleet until ctx ends, then waits briefly for the
// publishes in flight and returns ctx's error, or the error that kept it
// from starting. It may be called once.
func (s *Sim) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	if !s.cfg.NoNodeIndex {
		if err := s.ensureIndex(ctx); err != nil {
			return err
		}
		s.index = true
	}
	now := time.Now()
	s.started = now
	n := len(s.devs)
	s.maxRate = s.rateBound()
	s.due = make(dueHeap, 0, 3*n)
	base := now.UnixNano()
	for i := range s.devs {
		// Connects spread evenly over the ramp; status and events each at
		// a random phase of their period once connected.
		at := base + int64(s.cfg.Ramp)*int64(i)/int64(n)
		s.due = append(s.due, dueItem{at: at, dev: int32(i), kind: kindConnect})
		if s.cfg.StatusEvery > 0 {
			s.due = append(s.due, dueItem{at: at + s.rng.Int64N(int64(s.cfg.StatusEvery)) + 1, dev: int32(i), kind: kindStatus})
		}
		if every := s.eventEvery(); every > 0 {
			s.due = append(s.due, dueItem{at: at + s.rng.Int64N(int64(every)) + 1, dev: int32(i), kind: kindEvent})
		}
	}
	heap.Init(&s.due)

	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	beat := time.NewTicker(s.cfg.NodeTTL / 3)
	defer beat.Stop()
	s.heartbeat()
	last := now
	for {
		select {
		case <-ctx.Done():
			s.drain()
			return ctx.Err()
		case <-beat.C:
			s.heartbeat()
		case now = <-tick.C:
			dt := now.Sub(last)
			s.churn(now, dt)
			last = now
			// The budget follows the time since the last tick, so a
			// slow tick is made up, but at no more than twice the rate.
			s.work(now, max(64, int(math.Ceil(s.maxRate*min(dt, time.Second).Seconds()))))
			for _, p := range s.pubs {
				p.sendCopies()
			}
		}
	}
}

// rateBound is the most schedule items worked through per second: twice
// the fleet's steady rate, connects of the ramp included, so that a late
// simulator falls behind (and says so) rather than bursting.
func (s *Sim) rateBound() float64 {
	n := float64(len(s.devs))
	perSec := n / s.cfg.Ramp.Seconds()
	perSec += n / RefreshAfter(s.cfg.PresenceTTL).Seconds()
	if s.cfg.StatusEvery > 0 {
		perSec += n / s.cfg.StatusEvery.Seconds()
	}
	if every := s.eventEvery(); every > 0 {
		perSec += n / every.Seconds()
	}
	return 2 * perSec
}

// drain waits a little for the JetStream publishes in flight and sends
// the watch copies of those stored.
func (s *Sim) drain() {
	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	for _, p := range s.pubs {
		select {
		case <-p.js.PublishAsyncComplete():
		case <-deadline.C:
		}
		p.sendCopies()
		_ = p.nc.Flush()
	}
}

func (s *Sim) eventEvery() time.Duration {
	if s.cfg.EventsPerHour <= 0 {
		return 0
	}
	return time.Duration(float64(time.Hour) / s.cfg.EventsPerHour)
}

// work does the items due by now, at most budget of them.
func (s *Sim) work(now time.Time, budget int) {
	nowNs := now.UnixNano()
	if len(s.due) > 0 && s.due[0].at < nowNs {
		late := nowNs - s.due[0].at
		s.behind.Store(late)
		if now.Sub(s.started) > s.cfg.Ramp && late > s.maxBehind.Load() {
			s.maxBehind.Store(late)
		}
	} else {
		s.behind.Store(0)
	}
	for done := 0; done < budget && len(s.due) > 0 && s.due[0].at <= nowNs; done++ {
		it := s.due[0]
		d := &s.devs[it.dev]
		dead := s.stopped[d.node].Load()
		switch it.kind {
		case kindConnect:
			heap.Pop(&s.due)
			if !dead {
				s.connect(int(it.dev), now)
			}
		case kindRefresh:
			heap.Pop(&s.due)
			if !dead && d.online && d.gen == it.gen {
				s.writeEntry(int(it.dev), now)
				s.schedule(dueItem{at: nowNs + int64(RefreshAfter(s.cfg.PresenceTTL)), dev: it.dev, kind: kindRefresh, gen: d.gen})
			}
		case kindStatus:
			s.due[0].at += int64(s.cfg.StatusEvery)
			heap.Fix(&s.due, 0)
			if !dead && d.online {
				s.sendStatus(int(it.dev), now)
			}
		case kindEvent:
			s.due[0].at += int64(s.eventEvery())
			heap.Fix(&s.due, 0)
			if !dead && d.online {
				s.sendEvent(int(it.dev), now)
			}
		}
	}
}

// churn takes devices offline at ReconnectPerMinute, each coming back
// OfflineFor later.
func (s *Sim) churn(now time.Time, dt time.Duration) {
	if s.cfg.ReconnectPerMinute <= 0 || now.Sub(s.started) < s.cfg.Ramp {
		return
	}
	s.churnAcc += s.cfg.ReconnectPerMinute * float64(len(s.devs)) * dt.Minutes()
	for ; s.churnAcc >= 1; s.churnAcc-- {
		i := s.rng.IntN(len(s.devs))
		d := &s.devs[i]
		if !d.online || s.stopped[d.node].Load() {
			continue
		}
		s.disconnect(i, now)
		s.schedule(dueItem{at: now.Add(s.cfg.OfflineFor).UnixNano(), dev: int32(i), kind: kindConnect})
	}
}
