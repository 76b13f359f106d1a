package subjects

// Subjects of a data centre's own records (PROTOCOL §8, docs/topologies.md).
// In a deployment of several data centres each node publishes its records
// on its data centre's subjects, hub.dc.<dc>...., which only that data
// centre's own streams capture; the streams republish them on the §6
// subjects (hub.dev.<sn>.status, hub.presence.<sn>) for live subscribers,
// and the aggregates under the §6 names source them back to those
// subjects. Each record is so stored once, in its own data centre.

// DCDeviceStatus is where a node of data centre dc publishes a device's
// status records: hub.dc.<dc>.dev.<sn>.status.
func DCDeviceStatus(dc, sn string) (string, error) {
	if err := checkToken("dc", dc); err != nil {
		return "", err
	}
	return build("sn", sn, Prefix, "dc", dc, "dev", sn, "status")
}

// DCDeviceEvent is where a node of data centre dc publishes a device's
// event records: hub.dc.<dc>.dev.<sn>.event.
func DCDeviceEvent(dc, sn string) (string, error) {
	if err := checkToken("dc", dc); err != nil {
		return "", err
	}
	return build("sn", sn, Prefix, "dc", dc, "dev", sn, "event")
}

// DCPresence is where a node of data centre dc publishes a device's
// presence records: hub.dc.<dc>.presence.<sn>.
func DCPresence(dc, sn string) (string, error) {
	if err := checkToken("dc", dc); err != nil {
		return "", err
	}
	return build("sn", sn, Prefix, "dc", dc, "presence", sn)
}

// DCAllDeviceStatus matches every status record of data centre dc
// (stream HUB_STATUS_<dc>). dc must be a valid token (ValidToken): the
// caller checked it once, when it resolved its data centre.
func DCAllDeviceStatus(dc string) string { return Prefix + ".dc." + dc + ".dev.*.status" }

// DCAllDeviceEvents matches every event record of data centre dc (stream
// HUB_EVENTS_<dc>); dc as for DCAllDeviceStatus.
func DCAllDeviceEvents(dc string) string { return Prefix + ".dc." + dc + ".dev.*.event" }

// DCAllPresence matches every presence record of data centre dc (stream
// HUB_PRESENCE_<dc>); dc as for DCAllDeviceStatus.
func DCAllPresence(dc string) string { return Prefix + ".dc." + dc + ".presence.*" }

// DCDirList asks data centre dc's directory for one page of its devices
// (see DirList): each data centre elects its own directory, so a listing
// is answered within the data centre. dc as for DCAllDeviceStatus.
func DCDirList(dc string) string { return "hub.ctl.dir." + dc + ".list" }

// DCDirSummary asks data centre dc's directory for the device counts (see
// DirSummary).
func DCDirSummary(dc string) string { return "hub.ctl.dir." + dc + ".summary" }

// DCAllDir matches every directory request of data centre dc; its elected
// node serves them. It never matches the single-data-centre subjects
// (AllDir has one token less).
func DCAllDir(dc string) string { return "hub.ctl.dir." + dc + ".*" }
