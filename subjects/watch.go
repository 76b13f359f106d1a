package subjects

import (
	"fmt"
	"strings"
)

// Topics of the watch subjects: what kind of record a watch subject carries.
const (
	WatchStatus   = "status"
	WatchEvent    = "event"
	WatchPresence = "presence"
)

// WatchNone stands for an empty group or type in a watch subject: a device
// with no group (or no type) still has a subject with the same number of
// tokens, so every pattern matches it or not by its other tokens. A group
// or type that is itself "_" shares that token; a reader takes the group
// and type from the record, which is checked against the subject.
const WatchNone = "_"

// watchToken is the first token after the prefix of every watch subject.
const watchToken = "watch"

func validWatchTopic(topic string) bool {
	return topic == WatchStatus || topic == WatchEvent || topic == WatchPresence
}

func checkWatchTopic(topic string) error {
	if !validWatchTopic(topic) {
		return fmt.Errorf("%w: watch topic %q (want status, event or presence)", ErrBadToken, topic)
	}
	return nil
}

// watchPart encodes a group or type: empty becomes WatchNone.
func watchPart(what, s string) (string, error) {
	if s == "" {
		return WatchNone, nil
	}
	if err := checkToken(what, s); err != nil {
		return "", err
	}
	return s, nil
}

// Watch is the subject on which the hub publishes a copy of a device's
// record of topic (WatchStatus, WatchEvent or WatchPresence), once the
// record is stored: hub.watch.<group>.<type>.<sn>.<topic>. An empty group
// or type is written WatchNone. Nodes subscribe to the patterns below for
// exactly the devices their sessions watch.
func Watch(group, typ, sn, topic string) (string, error) {
	g, err := watchPart("group", group)
	if err != nil {
		return "", err
	}
	t, err := watchPart("type", typ)
	if err != nil {
		return "", err
	}
	if err := checkToken("sn", sn); err != nil {
		return "", err
	}
	if err := checkWatchTopic(topic); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, g, t, sn, topic}, "."), nil
}

// WatchAll is the pattern of every device's records of topic:
// hub.watch.*.*.*.<topic>.
func WatchAll(topic string) (string, error) {
	if err := checkWatchTopic(topic); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, "*", "*", "*", topic}, "."), nil
}

// WatchGroup is the pattern of the records of topic of every device in
// group: hub.watch.<group>.*.*.<topic>.
func WatchGroup(group, topic string) (string, error) {
	if err := checkToken("group", group); err != nil {
		return "", err
	}
	if err := checkWatchTopic(topic); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, group, "*", "*", topic}, "."), nil
}

// WatchType is the pattern of the records of topic of every device of
// type typ: hub.watch.*.<type>.*.<topic>.
func WatchType(typ, topic string) (string, error) {
	if err := checkToken("type", typ); err != nil {
		return "", err
	}
	if err := checkWatchTopic(topic); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, "*", typ, "*", topic}, "."), nil
}

// WatchGroupType is the pattern of the records of topic of every device
// of type typ in group: hub.watch.<group>.<type>.*.<topic>. A node watches
// a type, or everything, for a user who may see only some groups through
// one such pattern (or WatchGroup) per group, so that it receives nothing
// of the groups that user may not see.
func WatchGroupType(group, typ, topic string) (string, error) {
	if err := checkToken("group", group); err != nil {
		return "", err
	}
	if err := checkToken("type", typ); err != nil {
		return "", err
	}
	if err := checkWatchTopic(topic); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, group, typ, "*", topic}, "."), nil
}

// WatchDevice is the pattern of one device's records of topic:
// hub.watch.*.*.<sn>.<topic>.
func WatchDevice(sn, topic string) (string, error) {
	if err := checkToken("sn", sn); err != nil {
		return "", err
	}
	if err := checkWatchTopic(topic); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, "*", "*", sn, topic}, "."), nil
}

// WatchDeviceRecords is the pattern of every record of one device, of
// every topic: hub.watch.*.*.<sn>.*.
func WatchDeviceRecords(sn string) (string, error) {
	if err := checkToken("sn", sn); err != nil {
		return "", err
	}
	return strings.Join([]string{Prefix, watchToken, "*", "*", sn, "*"}, "."), nil
}

// ParseWatch is the inverse of Watch: the group, type (WatchNone read back
// as empty), serial number and topic of a watch subject. It refuses every
// other subject, patterns included.
func ParseWatch(subject string) (group, typ, sn, topic string, err error) {
	toks := strings.Split(subject, ".")
	if len(toks) != 6 || toks[0] != Prefix || toks[1] != watchToken || !validWatchTopic(toks[5]) {
		return "", "", "", "", fmt.Errorf("%w: %q", ErrNotWatch, subject)
	}
	for _, tok := range toks[2:5] {
		if !ValidToken(tok) {
			return "", "", "", "", fmt.Errorf("%w: %q", ErrNotWatch, subject)
		}
	}
	group, typ = toks[2], toks[3]
	if group == WatchNone {
		group = ""
	}
	if typ == WatchNone {
		typ = ""
	}
	return group, typ, toks[4], toks[5], nil
}

// IsWatch reports whether subject is in the watch scheme (a subject or a
// pattern): a cheap test before ParseWatch.
func IsWatch(subject string) bool {
	return strings.HasPrefix(subject, Prefix+"."+watchToken+".")
}
