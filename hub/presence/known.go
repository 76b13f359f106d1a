package presence

import (
	"context"
	"encoding/json"

	"github.com/fleethub/fleethub/subjects"
)

// Known returns a device's type and group as presence has them: from its
// entry while it is online, else from its last presence record. Two reads
// at most, for a device the registry does not know.
func (tr *Tracker) Known(sn string) (typ, group string, ok bool) {
	ctx, cancel := context.WithTimeout(tr.runCtx, CallTimeout)
	defer cancel()
	var v struct {
		Type  string `json:"type"`
		Group string `json:"group"`
	}
	if e, err := tr.kv.Get(ctx, sn); err == nil && json.Unmarshal(e.Value(), &v) == nil {
		return v.Type, v.Group, true
	}
	subj, err := subjects.Presence(sn)
	if err != nil {
		return "", "", false
	}
	m, err := tr.records.GetLastMsgForSubject(ctx, subj)
	if err != nil || json.Unmarshal(m.Data, &v) != nil {
		return "", "", false
	}
	return v.Type, v.Group, true
}
