package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/fleethub/fleethub/subjects"
)

// PushBody is the body of a message on a push subject, as a backend
// publishes it.
type PushBody struct {
	Service string            `json:"service"`
	Values  json.RawMessage   `json:"values,omitempty"`
	Where   map[string]string `json:"where,omitempty"`
	// ID is optional: a publisher that sets it lets clients drop duplicates
	// across retries; otherwise each node gives the push a unique id.
	ID string `json:"id,omitempty"`
}

// WhereKeys are the session attributes a conditional push (PushBody.Where)
// may test.
var WhereKeys = []string{"sn", "user", "role", "type", "group"}

// ownPushes are the pushes only the hub itself sends: no admin or backend
// may forge them.
var ownPushes = map[string]bool{"/push/presence": true, "/push/status": true, "/push/event": true, "/push/summary": true}

// Check validates a push body, naming the first problem. A body naming
// one of the hub's own push services gets ErrReservedService.
func (b *PushBody) Check() error {
	if !subjects.ValidPath(b.Service) {
		return fmt.Errorf("service: %q is not a valid service path", clip(b.Service))
	}
	if ownPushes[b.Service] {
		return ErrReservedService
	}
	if !isNull(b.Values) && !isObject(b.Values) {
		return fmt.Errorf("values: must be an object")
	}
	for k := range b.Where {
		if !slices.Contains(WhereKeys, k) {
			return fmt.Errorf("where: unknown attribute %q (want sn, user, role, type or group)", k)
		}
	}
	if len(b.ID) > 128 {
		return fmt.Errorf("id: longer than 128 bytes")
	}
	return nil
}

// CommandBody is the body of a request on hub.dev.<sn>.cmd.
type CommandBody struct {
	Service string          `json:"service"`
	Args    json.RawMessage `json:"args,omitempty"`
}

// Reply is the body of an answer on NATS: to a command, or from a backend
// service.
type Reply struct {
	Code   int             `json:"code"`
	Msg    string          `json:"msg"`
	Values json.RawMessage `json:"values"`
}

// The JSON helpers below are those of hub/wire, which schema does not
// import (it is a leaf).

// isObject reports whether raw is a JSON object.
func isObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// isNull reports whether raw is absent or the JSON literal null.
func isNull(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
