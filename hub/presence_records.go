package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// onRecord follows the HUB_PRESENCE stream: the view learns when a device
// went offline, and subscribed sessions get /push/presence.
func (p *presence) onRecord(data []byte, seq uint64) {
	var r PresenceRecord
	if err := json.Unmarshal(data, &r); err != nil || r.SN == "" {
		return
	}
	p.mu.Lock()
	v := p.viewLocked(r.SN)
	if r.Type != "" {
		v.typ, v.group = r.Type, r.Group
	}
	if !r.Online {
		v.offlineSince = r.At
	}
	caught := p.caught
	p.mu.Unlock()
	p.srv.metrics.presence.WithLabelValues(string(r.Reason)).Inc()
	if caught {
		p.srv.subs.deliver(topicPresence, 0, r.SN, r.Type, r.Group, "/push/presence", fmt.Sprintf("p%d", seq), data)
	}
}

func (p *presence) publishOffline(sn string, pe *PresenceEntry, reason Reason) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.publish(ctx, PresenceRecord{SN: sn, Type: pe.Type, Group: pe.Group, Online: false, Reason: reason, Node: pe.Node, At: p.srv.cfg.Now().UnixMilli()}, pe.Session+"/off")
}

// publish stores a record in HUB_PRESENCE (which also delivers it on
// hub.presence.<sn>). msgID de-duplicates it within the stream's window.
func (p *presence) publish(ctx context.Context, r PresenceRecord, msgID string) {
	subj, err := subjects.Presence(r.SN)
	if err != nil {
		return
	}
	b, _ := json.Marshal(r)
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, r.SN+"/"+msgID)
	if _, err := p.srv.js.PublishMsg(ctx, m); err != nil {
		p.srv.log.Error("presence record not stored", "sn", r.SN, "online", r.Online, "reason", r.Reason, "err", err)
	}
}
