// Package subjects is the NATS subject scheme of the hub, in one place.
//
// Every subject the hub publishes or subscribes to is built here, from
// tokens that are checked: a token may not be empty, nor contain '.', '*',
// '>' or white space, so a serial number can never widen a subscription or
// spill into a neighbouring subject. No other package builds a subject by
// string concatenation.
//
//	subj, err := subjects.DevicePush("R-001") // "hub.dev.R-001.push"
//	t, err := subjects.ParsePush(subj)        // Target{Kind: KindDevice, Value: "R-001"}
//
// Wildcard patterns that the hub or a backend subscribes to sit beside the
// builders: AllDeviceStatus is "hub.dev.*.status", and so on. The watch
// subjects (Watch, with the patterns WatchAll, WatchGroup, WatchType and
// WatchDevice) carry a copy of each stored record, so that a node can
// subscribe to exactly the devices its sessions watch.
package subjects
