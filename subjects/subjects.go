package subjects

import (
	"fmt"
	"strings"
)

// Prefix is the first token of every subject of the hub.
const Prefix = "hub"

// Wildcard patterns, for subscribers that want every device's records.
const (
	// AllDeviceStatus matches every device's status records (stream HUB_STATUS).
	AllDeviceStatus = "hub.dev.*.status"
	// AllDeviceEvents matches every device's event records (stream HUB_EVENTS).
	AllDeviceEvents = "hub.dev.*.event"
	// AllPresence matches every device's presence records (stream HUB_PRESENCE).
	AllPresence = "hub.presence.*"
	// AllPush is the subject of a push to every session.
	AllPush = "hub.all.push"
	// AllServices matches every backend service request.
	AllServices = "hub.svc.>"
	// Takeover is internal: a node announces a device session that has just
	// authenticated, so that older sessions for the same serial number, on
	// any node, are replaced.
	Takeover = "hub.ctl.takeover"
	// DCHello is internal: every node announces its data centre (name,
	// JetStream domain, node) on it every second, so that each node knows
	// which data centres exist and which it reaches now.
	DCHello = "hub.ctl.dc.hello"
)

// maxToken bounds a single token; serial numbers and names are far shorter.
const maxToken = 256

// ValidToken reports whether s can stand as one subject token: not empty,
// at most 256 bytes, and free of '.', '*', '>' and white space or control
// characters, any of which would change what the subject matches.
func ValidToken(s string) bool {
	if s == "" || len(s) > maxToken {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f {
			return false
		}
	}
	return true
}

func checkToken(what, s string) error {
	if !ValidToken(s) {
		return fmt.Errorf("%w: %s %q", ErrBadToken, what, s)
	}
	return nil
}

func build(what, value string, parts ...string) (string, error) {
	if err := checkToken(what, value); err != nil {
		return "", err
	}
	return strings.Join(parts, "."), nil
}

// DeviceStatus is where the hub publishes a device's status records.
func DeviceStatus(sn string) (string, error) {
	return build("sn", sn, Prefix, "dev", sn, "status")
}

// DeviceEvent is where the hub publishes a device's event records.
func DeviceEvent(sn string) (string, error) {
	return build("sn", sn, Prefix, "dev", sn, "event")
}

// DeviceCmd is the request subject of a command to a device; the node that
// holds the device answers.
func DeviceCmd(sn string) (string, error) {
	return build("sn", sn, Prefix, "dev", sn, "cmd")
}

// DevicePush is the subject of a push to one device.
func DevicePush(sn string) (string, error) {
	return build("sn", sn, Prefix, "dev", sn, "push")
}

// UserPush is the subject of a push to every session of an admin user.
func UserPush(user string) (string, error) {
	return build("user", user, Prefix, "user", user, "push")
}

// RolePush is the subject of a push to every session with a role.
func RolePush(role string) (string, error) {
	return build("role", role, Prefix, "role", role, "push")
}

// TypePush is the subject of a push to every device of a type.
func TypePush(typ string) (string, error) {
	return build("type", typ, Prefix, "type", typ, "push")
}

// GroupPush is the subject of a push to every device of a group and every
// admin or viewer whose groups name it explicitly.
func GroupPush(group string) (string, error) {
	return build("group", group, Prefix, "group", group, "push")
}

// Presence is where the hub publishes a device's presence changes.
func Presence(sn string) (string, error) {
	return build("sn", sn, Prefix, "presence", sn)
}

// KVKeys is the subject prefix of a JetStream KV bucket's keys: a key is
// stored on "$KV.<bucket>.<key>". Keys here are checked tokens (serial
// numbers, user names), so a key's subject is the prefix and the key.
func KVKeys(bucket string) string { return "$KV." + bucket + "." }
