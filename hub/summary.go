package hub

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/nats-io/nuid"
)

// summarize counts the known devices (registered, or in the presence
// history) that groups may see, from this node's views: no bus scan.
func (srv *Server) summarize(groups []string, now time.Time) Summary {
	sum := Summary{At: now.UnixMilli(), ByType: map[string]Counts{}, ByGroup: map[string]Counts{}}
	count := func(typ, group string, online bool) {
		if !auth.CanSee(groups, group) {
			return
		}
		t, g := sum.ByType[typ], sum.ByGroup[group]
		if online {
			sum.Online++
			t.Online++
			g.Online++
		} else {
			sum.Offline++
			t.Offline++
			g.Offline++
		}
		sum.ByType[typ], sum.ByGroup[group] = t, g
	}
	seen := srv.presence.each(func(sn, typ, group string, online bool) { count(typ, group, online) })
	srv.registry.mu.RLock()
	for sn, d := range srv.registry.entries {
		if !seen[sn] {
			count(d.Type, d.Group, false)
		}
	}
	srv.registry.mu.RUnlock()
	return sum
}

// summaries pushes /push/summary every SummaryInterval to the sessions
// that asked for it. Sessions with the same groups share one count and one
// encoded frame.
func (srv *Server) summaries(ctx context.Context) {
	tick := time.NewTicker(srv.cfg.SummaryInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			srv.coalescer.sweep(time.Minute)
			sessions := srv.subs.summarySessions()
			if len(sessions) == 0 {
				continue
			}
			frames := map[string][]byte{}
			for _, s := range sessions {
				id := s.Identity()
				if id == nil {
					continue
				}
				groups := append([]string(nil), id.Groups...)
				sort.Strings(groups)
				key := strings.Join(groups, ",")
				frame, ok := frames[key]
				if !ok {
					b, _ := json.Marshal(srv.summarize(groups, now))
					frame, _ = wire.EncodePush("/push/summary", nuid.Next(), b)
					frames[key] = frame
				}
				if s.send(frame) {
					srv.metrics.pushedOut("/push/summary", 1)
				}
			}
		}
	}
}
