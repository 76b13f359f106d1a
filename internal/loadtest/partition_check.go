package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go/jetstream"
)

// healed measures how long each data centre's listing takes to show every
// device of both online, and checks that the nonces used during the cut
// are refused in the other data centre once the sets merged.
func (p *partition) healed() {
	want := p.expected()
	done := [2]bool{}
	last := [2]string{}
	for i := range p.dcs {
		p.dcs[i].fig.Converge = -1
	}
	for time.Since(p.healAt) < convergeWait && !(done[0] && done[1]) {
		for i, d := range p.dcs {
			if done[i] {
				continue
			}
			seen, err := d.online()
			if err != nil {
				last[i] = err.Error()
				continue
			}
			missing, example := 0, ""
			for sn := range want {
				if !seen[sn] {
					missing++
					example = sn
				}
			}
			if missing == 0 {
				done[i] = true
				d.fig.Converge = time.Since(p.healAt)
				continue
			}
			last[i] = fmt.Sprintf("%d of %d devices not online (%s, for one)", missing, len(want), example)
		}
		time.Sleep(100 * time.Millisecond) // the poll period
	}
	for i, d := range p.dcs {
		switch {
		case !done[i]:
			p.problem("after the heal, the listing in %s was not complete after %v: %s", d.name, convergeWait, last[i])
		case d.fig.Converge > ConvergeLimit:
			p.problem("after the heal, the listing in %s took %v to show every device online (limit %v)", d.name, d.fig.Converge.Round(time.Millisecond), ConvergeLimit)
		}
	}
	// The nonce sets merge: once the other data centre's seen set holds
	// as many claims as this one's own, a nonce of the cut is refused
	// there.
	for i, d := range p.dcs {
		a := p.cutAuth[i]
		if a == nil {
			continue
		}
		other := p.dcs[1-i]
		own, seen := "KV_"+schema.Layout{DC: d.name}.Nonces(), "KV_"+schema.Layout{DC: other.name}.NoncesSeen()
		deadline := time.Now().Add(ConvergeLimit)
		for time.Now().Before(deadline) {
			n, err1 := streamMsgs(d.js, own)
			m, err2 := streamMsgs(other.js, seen)
			if err1 == nil && err2 == nil && m >= n && n > 0 {
				break
			}
			time.Sleep(100 * time.Millisecond) // the poll period
		}
		conn, code, _, err := AuthDevice(context.Background(), other.hub.WSURL, *a)
		if err == nil && code == 0 {
			_ = conn.Close()
		}
		if code != 401 {
			p.problem("after the heal, a nonce used in %s during the cut answered %d in %s (%v), want 401", d.name, code, other.name, err)
		}
	}
	// Commands cross again.
	for i, d := range p.dcs {
		other := p.dcs[1-i].devices[0].sn
		deadline := time.Now().Add(ConvergeLimit)
		code := -1
		for time.Now().Before(deadline) {
			if code, _ = d.command(other); code == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond) // the poll period
		}
		if code != 0 {
			p.problem("after the heal, a command from %s to %s still answered %d after %v", d.name, other, code, ConvergeLimit)
		}
	}
}

func streamMsgs(js jetstream.JetStream, name string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.Msgs, nil
}

// stores stops the devices, once each has one more report acknowledged,
// and checks the sessions, the admins' presence pushes and the stores.
func (p *partition) stores() {
	before := map[*dcDevice]int{}
	for _, d := range p.dcs {
		for _, dev := range d.devices {
			dev.mu.Lock()
			before[dev] = len(dev.acks)
			dev.mu.Unlock()
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for dev, n := range before {
		for {
			dev.mu.Lock()
			more := len(dev.acks) > n
			dev.mu.Unlock()
			if more || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // the poll period
		}
	}
	haltAt := time.Now().UnixMilli()
	p.haltAt = haltAt
	p.halt()
	fleet := map[string]bool{}
	for _, d := range p.dcs {
		for _, dev := range d.devices {
			fleet[dev.sn] = true
		}
	}
	acked := [2]map[string]bool{}
	for i, d := range p.dcs {
		acked[i] = map[string]bool{}
		var lat, cutLat []time.Duration
		for _, dev := range d.devices {
			dev.mu.Lock()
			if dev.readErr != nil {
				d.fig.SessionsEnded++
				p.problem("%s (%s): session ended: %v", dev.sn, d.name, dev.readErr)
			}
			if n := len(dev.pending); n > 2 {
				d.fig.StatusUnanswered += n
				p.problem("%s (%s): %d status reports never answered", dev.sn, d.name, n)
			}
			for _, a := range dev.acks {
				acked[i][a.cid] = true
				lat = append(lat, a.lat)
				if !a.sent.Before(p.cutAt) && a.sent.Before(p.healAt) {
					cutLat = append(cutLat, a.lat)
				}
			}
			for c, n := range dev.codes {
				if c != 0 {
					d.fig.StatusCodes[c] += n
				}
			}
			dev.mu.Unlock()
		}
		d.fig.StatusAcked = len(acked[i])
		d.fig.StatusP50, d.fig.StatusP99 = Percentile(lat, 50), Percentile(lat, 99)
		d.fig.CutStatusP99 = Percentile(cutLat, 99)
		if len(d.fig.StatusCodes) > 0 {
			p.problem("status reports in %s answered with codes %v", d.name, d.fig.StatusCodes)
		}
	}
	// Live presence: no offline push about a device that stayed.
	for _, d := range p.dcs {
		d.drainPresence()
		for _, r := range d.presence {
			if r.At >= haltAt {
				continue
			}
			if r.Reason == hub.ReasonNodeLost {
				d.fig.NodeLost++
				p.problem("%s's admin was pushed %s offline with node_lost at %d", d.name, r.SN, r.At)
			}
			if !fleet[r.SN] {
				continue
			}
			if !r.Online {
				d.fig.FalseOffline++
				p.problem("%s's admin was pushed %s offline (%s) at %d", d.name, r.SN, r.Reason, r.At)
			}
		}
	}
	// Status records: each acknowledged one in its own data centre's
	// stream, and in the other data centre's view.
	for i, d := range p.dcs {
		ownStream := schema.Layout{DC: d.name}.StatusStream()
		d.fig.StatusLostOwn = p.missingRecords(d.js, ownStream, acked[i])
		d.fig.StatusLostView = p.missingRecords(p.dcs[1-i].js, hub.StreamStatus, acked[i])
		if d.fig.StatusLostOwn > 0 {
			p.problem("%d of %d acknowledged status records of %s are missing from %s", d.fig.StatusLostOwn, len(acked[i]), d.name, ownStream)
		}
		if d.fig.StatusLostView > 0 {
			p.problem("%d of %d acknowledged status records of %s are missing from %s's %s view", d.fig.StatusLostView, len(acked[i]), d.name, p.dcs[1-i].name, hub.StreamStatus)
		}
	}
	// Presence history in each data centre's view: every device of both
	// has exactly its connected record (it never went offline), and the
	// history alternates.
	for _, d := range p.dcs {
		var hist map[string][]hub.PresenceRecord
		deadline := time.Now().Add(convergeWait)
		for {
			hist = p.presenceView(d)
			complete := true
			for sn := range fleet {
				if len(hist[sn]) == 0 {
					complete = false
				}
			}
			if complete || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond) // the poll period
		}
		// Every history alternates, the replay probes' too (they
		// connected and closed), but for those that had a session in
		// both data centres at once.
		for sn, h := range hist {
			if i, err := CheckAlternation(h); i >= 0 && !p.crossed[sn] {
				p.problem("%s's %s view, %s: %v", d.name, hub.StreamPresence, sn, err)
			}
			for _, r := range h {
				if r.Reason == hub.ReasonNodeLost {
					d.fig.NodeLost++
					p.problem("%s's %s view: %s offline with node_lost at %d", d.name, hub.StreamPresence, sn, r.At)
				}
			}
		}
		for sn := range fleet {
			h := hist[sn]
			if len(h) == 0 {
				p.problem("%s's %s view has no presence record of %s", d.name, hub.StreamPresence, sn)
				continue
			}
			for _, r := range Offline(h) {
				d.fig.FalseOffline++
				p.problem("%s's %s view: %s offline (%s) at %d", d.name, hub.StreamPresence, sn, r.Reason, r.At)
			}
		}
	}
}

// presenceView reads d's HUB_PRESENCE view: the records of every device
// before the devices were stopped, by serial, in order.
func (p *partition) presenceView(d *dcScene) map[string][]hub.PresenceRecord {
	hist := map[string][]hub.PresenceRecord{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := readAll(ctx, d.js, hub.StreamPresence)
	if err != nil {
		p.t.Logf("read %s in %s: %v", hub.StreamPresence, d.name, err)
		return hist
	}
	for _, b := range msgs {
		var r hub.PresenceRecord
		if json.Unmarshal(b, &r) == nil && r.At < p.haltAt {
			hist[r.SN] = append(hist[r.SN], r)
		}
	}
	return hist
}

// missingRecords counts the content ids of acked not (yet) in stream,
// reading it again until none is missing or convergeWait has passed.
func (p *partition) missingRecords(js jetstream.JetStream, stream string, acked map[string]bool) int {
	deadline := time.Now().Add(convergeWait)
	missing := len(acked)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		msgs, err := readAll(ctx, js, stream)
		cancel()
		if err == nil {
			stored := map[string]bool{}
			for _, b := range msgs {
				var rec struct {
					Status struct {
						CID string `json:"cid"`
					} `json:"status"`
				}
				if json.Unmarshal(b, &rec) == nil {
					stored[rec.Status.CID] = true
				}
			}
			missing = 0
			for cid := range acked {
				if !stored[cid] {
					missing++
				}
			}
		} else {
			p.t.Logf("read %s: %v", stream, err)
		}
		if missing == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(500 * time.Millisecond) // the poll period
	}
}

// readAll reads every message of a stream, trying again while it cannot
// (a view's stream may not exist yet) until ctx ends.
func readAll(ctx context.Context, js jetstream.JetStream, stream string) ([][]byte, error) {
	for {
		msgs, err := readStreamOnce(ctx, js, stream)
		if err == nil {
			return msgs, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s: %w", stream, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Table prints the figures, one column per data centre.
func (r PartitionResult) Table() string {
	var b strings.Builder
	how := "cut"
	if r.Silent {
		how = "silent cut"
	}
	fmt.Fprintf(&b, "topology %s, WAN %v each way, %s %v\n", r.Topology, r.Delay, how, r.Cut)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	ms := func(d time.Duration) string {
		if d < 0 {
			return "never"
		}
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	row := func(name string, f func(DCFigures) string) {
		fmt.Fprintf(w, "%s\t%s\t%s\n", name, f(r.DCs[0]), f(r.DCs[1]))
	}
	row("", func(f DCFigures) string { return f.Name })
	row("devices", func(f DCFigures) string { return fmt.Sprint(f.Devices) })
	row("connect + auth p50 / p99", func(f DCFigures) string { return ms(f.ConnectP50) + " / " + ms(f.ConnectP99) })
	row("connect + auth one at a time p50", func(f DCFigures) string { return ms(f.LoneConnectP50) })
	row("connect + auth during the cut", func(f DCFigures) string { return ms(f.CutConnect) })
	row("status acked", func(f DCFigures) string { return fmt.Sprint(f.StatusAcked) })
	row("status ack p50 / p99", func(f DCFigures) string { return ms(f.StatusP50) + " / " + ms(f.StatusP99) })
	row("status ack p99 during the cut", func(f DCFigures) string { return ms(f.CutStatusP99) })
	row("command, own DC p50 / p99", func(f DCFigures) string { return ms(f.CmdOwnP50) + " / " + ms(f.CmdOwnP99) })
	row("command, to the other DC p50 / p99", func(f DCFigures) string { return ms(f.CmdCrossP50) + " / " + ms(f.CmdCrossP99) })
	row("nonce refused in the other DC from", func(f DCFigures) string { return ms(f.ReplayRefusedFrom) })
	row("nonce probes accepted in both DCs", func(f DCFigures) string { return fmt.Sprint(f.ReplayAccepted) })
	row("commands to the other DC in the cut", func(f DCFigures) string { return fmt.Sprint(f.CutCrossCodes) })
	row("push to the other DC in the cut", func(f DCFigures) string { return fmt.Sprint(f.CutCrossPush) })
	row("listing complete after heal", func(f DCFigures) string { return ms(f.Converge) })
	row("records lost (own stream / other's view)", func(f DCFigures) string { return fmt.Sprintf("%d / %d", f.StatusLostOwn, f.StatusLostView) })
	row("false offline / node_lost", func(f DCFigures) string { return fmt.Sprintf("%d / %d", f.FalseOffline, f.NodeLost) })
	row("sessions ended", func(f DCFigures) string { return fmt.Sprint(f.SessionsEnded) })
	_ = w.Flush()
	fmt.Fprintf(&b, "problems: %d\n", len(r.Problems))
	for _, pr := range r.Problems {
		fmt.Fprintf(&b, "  %s\n", pr)
	}
	return b.String()
}
