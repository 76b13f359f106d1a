package schema

import (
	"errors"
	"fmt"

	"github.com/fleethub/fleethub/subjects"
)

// PresenceEntry is a device's entry in the hub_presence bucket, present
// while the device is online. Type and group are extra fields beyond the
// protocol's, so that a reader needs no second lookup.
type PresenceEntry struct {
	Node     string `json:"node"`
	Session  string `json:"session"`
	Since    int64  `json:"since"`
	LastSeen int64  `json:"last_seen"`
	Addr     string `json:"addr"`
	Type     string `json:"type,omitempty"`
	Group    string `json:"group,omitempty"`
}

// NodeEntry is a node's liveness entry in the hub_nodes bucket.
type NodeEntry struct {
	Addr     string `json:"addr"`
	Since    int64  `json:"since"`
	Sessions int    `json:"sessions"`
}

// Device is a device registry entry (bucket hub_devices, key <sn>).
type Device struct {
	Type  string `json:"type"`
	Group string `json:"group"`
}

// Validate checks a registry entry after it is loaded. The type and group
// become subject tokens of the device's interests, so an entry that could
// not stand in a subject would lock its device out; the node ignores it
// instead, like an entry that is not JSON.
func (d Device) Validate() error {
	var errs []error
	for _, f := range [...]struct{ name, v string }{{"type", d.Type}, {"group", d.Group}} {
		if !subjects.ValidToken(f.v) || len(f.v) > 64 {
			errs = append(errs, fmt.Errorf("hub: device %s %q: want 1 to 64 characters without '.', '*', '>' or spaces", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}
