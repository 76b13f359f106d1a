package hub

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/nats-io/nuid"
)

// summarize counts the known devices (registered, or in the presence
// history) that groups may see, as the directory keeps them: no bus scan,
// no count on this node.
func (srv *Server) summarize(ctx context.Context, groups []string, now time.Time) (Summary, *wire.Error) {
	r, werr := srv.askDirectory(ctx, srv.layout.DirSummary(), &dirSummaryRequest{Groups: groups})
	if werr != nil {
		return Summary{}, werr
	}
	sum := Summary{ByType: map[string]Counts{}, ByGroup: map[string]Counts{}}
	if r.Sum != nil {
		sum = *r.Sum
		if sum.ByType == nil {
			sum.ByType = map[string]Counts{}
		}
		if sum.ByGroup == nil {
			sum.ByGroup = map[string]Counts{}
		}
	}
	sum.At = now.UnixMilli()
	return sum, nil
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
					// No directory answering: this round is skipped (and
					// counted); the next comes one interval later.
					if sum, werr := srv.summarize(ctx, groups, now); werr == nil {
						b, _ := json.Marshal(sum)
						frame, _ = wire.EncodePush("/push/summary", nuid.Next(), b)
					}
					frames[key] = frame
				}
				if frame != nil && s.send(frame) {
					srv.metrics.pushedOut("/push/summary", 1)
				}
			}
		}
	}
}
