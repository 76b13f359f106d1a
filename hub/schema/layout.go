package schema

import (
	"fmt"

	"github.com/fleethub/fleethub/subjects"
)

// Layout says where a node keeps its state: the names of the buckets and
// streams it writes (its data centre's own) and of those it reads the
// fleet from (the aggregates under the names of PROTOCOL §6), and the
// subjects it publishes records on.
//
// The zero Layout is classic mode, one JetStream for the whole hub: the
// own names are the §6 names and records go to the §6 subjects, exactly
// as before data centres existed. With DC set (data-centre mode), every
// own store carries the data centre as a suffix (hub_presence_east,
// HUB_STATUS_east), records are published on hub.dc.<dc>.... subjects
// that only the own streams capture, and the §6 names are aggregates
// that source every data centre's own stores (docs/topologies.md).
type Layout struct {
	// DC is the node's data centre, a subject token; "" is classic mode.
	DC string
	// Domain is the JetStream domain the node's stores live in, "" for
	// none.
	Domain string
	// Cluster is the NATS cluster the node's connection reaches, "" for
	// a standalone server: own stores are placed in it.
	Cluster string
}

// Validate reports a data centre that cannot stand as a subject token.
func (l Layout) Validate() error {
	if l.DC != "" && !subjects.ValidToken(l.DC) {
		return fmt.Errorf("%w: data centre %q is not a subject token", ErrBadLayout, l.DC)
	}
	return nil
}

// DCMode reports whether the node runs in data-centre mode.
func (l Layout) DCMode() bool { return l.DC != "" }

// own is the own name of a store whose §6 (or classic) name is name.
func (l Layout) own(name string) string {
	if l.DC == "" {
		return name
	}
	return name + "_" + l.DC
}

// Presence is the node's own presence bucket: hub_presence, or
// hub_presence_<dc>. The fleet's is always BucketPresence.
func (l Layout) Presence() string { return l.own(BucketPresence) }

// Nodes is the own node liveness bucket, the only one a node judges
// liveness from: hub_nodes, or hub_nodes_<dc>.
func (l Layout) Nodes() string { return l.own(BucketNodes) }

// NodeDevices is the own index of the devices each node holds.
func (l Layout) NodeDevices() string { return l.own(BucketNodeDevices) }

// Roles is the own bucket of the hub's leases (the directory's).
func (l Layout) Roles() string { return l.own(BucketRoles) }

// Nonces is the own bucket of the device nonces claimed in the data
// centre.
func (l Layout) Nonces() string { return l.own(BucketNonces) }

// NoncesSeen is the bucket of the nonces claimed in every other data
// centre (hub_nonces_seen_<dc>, sourcing their own); "" in classic mode.
func (l Layout) NoncesSeen() string {
	if l.DC == "" {
		return ""
	}
	return BucketNoncesSeen + "_" + l.DC
}

// StatusStream, EventStream and PresenceStream are the own record
// streams: HUB_STATUS, or HUB_STATUS_<dc>, and so on. The fleet's are
// always StreamStatus, StreamEvents and StreamPresence.
func (l Layout) StatusStream() string { return l.own(StreamStatus) }

// EventStream is the own event stream (see StatusStream).
func (l Layout) EventStream() string { return l.own(StreamEvents) }

// PresenceStream is the own presence history (see StatusStream).
func (l Layout) PresenceStream() string { return l.own(StreamPresence) }

// StatusSubject is where the node publishes device sn's status records.
func (l Layout) StatusSubject(sn string) (string, error) {
	if l.DC == "" {
		return subjects.DeviceStatus(sn)
	}
	return subjects.DCDeviceStatus(l.DC, sn)
}

// EventSubject is where the node publishes device sn's event records.
func (l Layout) EventSubject(sn string) (string, error) {
	if l.DC == "" {
		return subjects.DeviceEvent(sn)
	}
	return subjects.DCDeviceEvent(l.DC, sn)
}

// PresenceSubject is where the node publishes device sn's presence
// records.
func (l Layout) PresenceSubject(sn string) (string, error) {
	if l.DC == "" {
		return subjects.Presence(sn)
	}
	return subjects.DCPresence(l.DC, sn)
}

// StatusSubjects is what the own status stream captures.
func (l Layout) StatusSubjects() string {
	if l.DC == "" {
		return subjects.AllDeviceStatus
	}
	return subjects.DCAllDeviceStatus(l.DC)
}

// EventSubjects is what the own event stream captures.
func (l Layout) EventSubjects() string {
	if l.DC == "" {
		return subjects.AllDeviceEvents
	}
	return subjects.DCAllDeviceEvents(l.DC)
}

// PresenceSubjects is what the own presence stream captures.
func (l Layout) PresenceSubjects() string {
	if l.DC == "" {
		return subjects.AllPresence
	}
	return subjects.DCAllPresence(l.DC)
}

// DirList is the subject of the directory's listing requests.
func (l Layout) DirList() string {
	if l.DC == "" {
		return subjects.DirList
	}
	return subjects.DCDirList(l.DC)
}

// DirSummary is the subject of the directory's summary requests.
func (l Layout) DirSummary() string {
	if l.DC == "" {
		return subjects.DirSummary
	}
	return subjects.DCDirSummary(l.DC)
}

// AllDir matches every request the directory serves.
func (l Layout) AllDir() string {
	if l.DC == "" {
		return subjects.AllDir
	}
	return subjects.DCAllDir(l.DC)
}
