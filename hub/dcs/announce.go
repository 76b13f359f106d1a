package dcs

import (
	"encoding/json"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
)

// hello is the body of an announce on subjects.DCHello: the sender's data
// centre, JetStream domain ("" without one), node id and sending time
// (Unix milliseconds).
type hello struct {
	DC     string `json:"dc"`
	Domain string `json:"domain"`
	Node   string `json:"node"`
	At     int64  `json:"at"`
}

// maxHello bounds an announce's body; a real one is under 200 bytes.
const maxHello = 1024

// Reasons an announce is dropped, the labels of
// fleethub_dc_announces_refused_total.
const (
	refUnsigned  = "unsigned"        // no signature header
	refBadSig    = "bad_signature"   // Verify refused it (a bad or stale signature)
	refMalformed = "malformed"       // not a hello body
	refBadName   = "bad_name"        // a data centre, domain or node that is not a subject token
	refConflict  = "domain_conflict" // a known data centre announced with another domain
	refOverCap   = "over_cap"        // one data centre (or node of ours) more than the engine keeps
)

var refReasons = []string{refUnsigned, refBadSig, refMalformed, refBadName, refConflict, refOverCap}

// announceLoop announces this node every Interval and marks absent the
// data centres not heard for AbsentAfter intervals.
func (e *Engine) announceLoop() {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	e.announce()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
			e.announce()
			e.sweep(time.Now())
		}
	}
}

// announce publishes this node's hello, signed.
func (e *Engine) announce() {
	body, _ := json.Marshal(hello{DC: e.cfg.DC, Domain: e.cfg.Domain, Node: e.cfg.Node, At: time.Now().UnixMilli()})
	m := &nats.Msg{Subject: subjects.DCHello, Data: body}
	e.cfg.Sign(m)
	if err := e.cfg.Conn.PublishMsg(m); err != nil {
		e.m.announceErrors.Inc()
		e.warnSend.Do(func() { e.log.Warn("data centre announce not sent", "err", err) })
	}
}

// sweep marks absent every other data centre not heard since
// now - absent, and forgets the nodes of ours not heard as long.
func (e *Engine) sweep(now time.Time) {
	var lost []string
	e.mu.Lock()
	for name, st := range e.dcs {
		if name == e.cfg.DC || !st.present || now.Sub(st.heard) <= e.absent {
			continue
		}
		st.present, st.since = false, now
		lost = append(lost, name)
	}
	for n, at := range e.nodes {
		if n != e.cfg.Node && now.Sub(at) > e.absent {
			delete(e.nodes, n)
		}
	}
	e.mu.Unlock()
	for _, name := range lost {
		e.log.Warn("data centre unreachable", "other", name, "after", e.absent)
	}
	if len(lost) > 0 {
		e.updateGauges()
	}
}

// onHello takes an announce (on the connection's delivery goroutine: it
// never blocks and makes no NATS call).
func (e *Engine) onHello(m *nats.Msg) {
	if m.Header.Get(schema.HeaderSig) == "" || m.Header.Get(schema.HeaderSigAt) == "" {
		e.refuse(refUnsigned, m, nil)
		return
	}
	if err := e.cfg.Verify(m); err != nil {
		e.refuse(refBadSig, m, err)
		return
	}
	var h hello
	if len(m.Data) > maxHello || json.Unmarshal(m.Data, &h) != nil {
		e.refuse(refMalformed, m, nil)
		return
	}
	if !subjects.ValidToken(h.DC) || !subjects.ValidToken(h.Node) || (h.Domain != "" && !subjects.ValidToken(h.Domain)) {
		e.refuse(refBadName, m, nil)
		return
	}
	now := time.Now()
	var learnt, back bool
	var reason string
	e.mu.Lock()
	st := e.dcs[h.DC]
	switch {
	case st == nil && len(e.dcs) >= MaxDCs:
		reason = refOverCap
	case st == nil:
		e.dcs[h.DC] = &dcState{domain: h.Domain, present: true, since: now, heard: now}
		e.ensure, learnt = true, true
	case st.domain != h.Domain:
		reason = refConflict
	default:
		if !st.present {
			st.present, st.since, back = true, now, true
			if st.heard.IsZero() && now.Sub(e.started) <= e.absent {
				// Known from the views, heard as this node starts: the
				// node restarted, not the link. Kick only a source that
				// is stalled.
				e.checkHealth = true
			} else {
				e.kicks[h.DC] = true
			}
		}
		st.heard = now
		if h.DC == e.cfg.DC {
			if _, ok := e.nodes[h.Node]; ok || len(e.nodes) < maxNodes {
				e.nodes[h.Node] = now
			} else {
				reason = refOverCap
			}
		}
	}
	e.mu.Unlock()
	if reason != "" {
		e.refuse(reason, m, nil)
		return
	}
	if learnt || back {
		e.updateGauges()
		e.signal()
	}
	if learnt {
		e.log.Info("data centre learnt", "other", h.DC, "domain", h.Domain, "from", h.Node)
		if h.Domain == "" && e.cfg.Domain != "" {
			// Its stores can be named only from a JetStream without a
			// domain too: sourced as this node's own, they are not found.
			e.log.Error("data centre has no JetStream domain: its stores cannot be sourced from this domain; give every data centre a domain",
				"other", h.DC, "domain", e.cfg.Domain)
		}
	}
	if back {
		e.log.Info("data centre reachable again", "other", h.DC, "from", h.Node)
		if e.cfg.OnReturn != nil {
			e.cfg.OnReturn(h.DC)
		}
	}
}

// refuse counts a dropped announce and logs it at a bounded rate.
func (e *Engine) refuse(reason string, m *nats.Msg, err error) {
	e.m.refused.WithLabelValues(reason).Inc()
	e.warnRefused.Do(func() { e.log.Warn("data centre announce refused", "reason", reason, "bytes", len(m.Data), "err", err) })
}
