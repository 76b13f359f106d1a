package schema

import "encoding/json"

// DeviceView is a device as /admin/devices and snapshots show it.
type DeviceView struct {
	SN       string          `json:"sn"`
	Type     string          `json:"type"`
	Group    string          `json:"group"`
	Online   bool            `json:"online"`
	Node     string          `json:"node"`
	Addr     string          `json:"addr,omitempty"`    // online: the session's remote address
	Session  string          `json:"session,omitempty"` // online: the session id
	Since    int64           `json:"since"`
	LastSeen int64           `json:"last_seen"`
	Status   json.RawMessage `json:"status"`
	StatusAt *int64          `json:"status_at"`
}

// Counts are online and offline device counts.
type Counts struct {
	Online  int `json:"online"`
	Offline int `json:"offline"`
}

// Summary is the body of /push/summary.
type Summary struct {
	At      int64             `json:"at"`
	Online  int               `json:"online"`
	Offline int               `json:"offline"`
	ByType  map[string]Counts `json:"by_type"`
	ByGroup map[string]Counts `json:"by_group"`
}
