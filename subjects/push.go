package subjects

import (
	"fmt"
	"strings"
)

// Kind names what a push is addressed to.
type Kind string

// The kinds of push target, one per push subject of the scheme.
const (
	KindDevice Kind = "sn"
	KindUser   Kind = "user"
	KindRole   Kind = "role"
	KindType   Kind = "type"
	KindGroup  Kind = "group"
	KindAll    Kind = "all"
)

// Target is the audience of a push: a kind and, except for KindAll, a value.
type Target struct {
	Kind  Kind
	Value string
}

// String renders the target as hubctl's --to takes it: "sn:R-001", "all".
func (t Target) String() string {
	if t.Kind == KindAll {
		return string(KindAll)
	}
	return string(t.Kind) + ":" + t.Value
}

// Subject returns the push subject of the target.
func (t Target) Subject() (string, error) {
	switch t.Kind {
	case KindDevice:
		return DevicePush(t.Value)
	case KindUser:
		return UserPush(t.Value)
	case KindRole:
		return RolePush(t.Value)
	case KindType:
		return TypePush(t.Value)
	case KindGroup:
		return GroupPush(t.Value)
	case KindAll:
		if t.Value != "" {
			return "", fmt.Errorf("%w: target all takes no value", ErrBadToken)
		}
		return AllPush, nil
	}
	return "", fmt.Errorf("%w: unknown target kind %q", ErrNotPush, t.Kind)
}

// ParseTarget reads "sn:X", "user:U", "role:R", "type:T", "group:G" or "all".
func ParseTarget(s string) (Target, error) {
	if s == string(KindAll) {
		return Target{Kind: KindAll}, nil
	}
	kind, value, ok := strings.Cut(s, ":")
	if !ok || Kind(kind) == KindAll {
		return Target{}, fmt.Errorf("%w: target %q is not kind:value or all", ErrNotPush, s)
	}
	t := Target{Kind: Kind(kind), Value: value}
	if _, err := t.Subject(); err != nil {
		return Target{}, err
	}
	return t, nil
}

// ParsePush maps a push subject back to its target. It is the inverse of
// Target.Subject and refuses any other subject.
func ParsePush(subject string) (Target, error) {
	if subject == AllPush {
		return Target{Kind: KindAll}, nil
	}
	toks := strings.Split(subject, ".")
	if len(toks) != 4 || toks[0] != Prefix || toks[3] != "push" || !ValidToken(toks[2]) {
		return Target{}, fmt.Errorf("%w: %q", ErrNotPush, subject)
	}
	var kind Kind
	switch toks[1] {
	case "dev":
		kind = KindDevice
	case "user":
		kind = KindUser
	case "role":
		kind = KindRole
	case "type":
		kind = KindType
	case "group":
		kind = KindGroup
	default:
		return Target{}, fmt.Errorf("%w: %q", ErrNotPush, subject)
	}
	return Target{Kind: kind, Value: toks[2]}, nil
}

// ParseDeviceCmd returns the serial number of a hub.dev.<sn>.cmd subject.
func ParseDeviceCmd(subject string) (string, bool) {
	toks := strings.Split(subject, ".")
	if len(toks) != 4 || toks[0] != Prefix || toks[1] != "dev" || toks[3] != "cmd" || !ValidToken(toks[2]) {
		return "", false
	}
	return toks[2], true
}
