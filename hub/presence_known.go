package hub

import (
	"context"
	"encoding/json"

	"github.com/fleethub/fleethub/subjects"
)

// known returns a device's type and group as presence has them: from its
// entry while it is online, else from its last presence record. Two reads
// at most, for a device the registry does not know.
func (p *presence) known(sn string) (typ, group string, ok bool) {
	ctx, cancel := context.WithTimeout(p.srv.runCtx, presenceCallTimeout)
	defer cancel()
	var v struct {
		Type  string `json:"type"`
		Group string `json:"group"`
	}
	if e, err := p.kv.Get(ctx, sn); err == nil && json.Unmarshal(e.Value(), &v) == nil {
		return v.Type, v.Group, true
	}
	subj, err := subjects.Presence(sn)
	if err != nil {
		return "", "", false
	}
	m, err := p.records.GetLastMsgForSubject(ctx, subj)
	if err != nil || json.Unmarshal(m.Data, &v) != nil {
		return "", "", false
	}
	return v.Type, v.Group, true
}
