package hub

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/fleethub/fleethub/subjects"
)

// Who receives a push, in one place: the interests (push subjects) a
// session joins for its identity, whether it is in a target's audience,
// whether it meets a push's where condition, and who may push where.

// interestsOf lists the push subjects a session with identity id receives.
func interestsOf(id *Identity) ([]string, error) {
	var subjs []string
	add := func(subj string, err error) error {
		if err == nil {
			subjs = append(subjs, subj)
		}
		return err
	}
	role, err := subjects.RolePush(string(id.Role))
	if err != nil {
		return nil, err
	}
	subjs = append(subjs, role, subjects.AllPush)
	if id.Role == auth.RoleDevice {
		for _, f := range []func() (string, error){
			func() (string, error) { return subjects.DevicePush(id.SN) },
			func() (string, error) { return subjects.DeviceCmd(id.SN) },
			func() (string, error) { return subjects.TypePush(id.Type) },
			func() (string, error) { return subjects.GroupPush(id.Group) },
		} {
			if err := add(f()); err != nil {
				return nil, err
			}
		}
		return subjs, nil
	}
	if err := add(subjects.UserPush(id.User)); err != nil {
		return nil, err
	}
	for _, g := range id.Groups {
		if g == "*" {
			continue
		}
		if err := add(subjects.GroupPush(g)); err != nil {
			return nil, err
		}
	}
	return subjs, nil
}

// matchesTarget reports whether a session with this identity is in the
// audience of target. It mirrors interestsOf.
func (id *Identity) matchesTarget(t subjects.Target) bool {
	switch t.Kind {
	case subjects.KindAll:
		return true
	case subjects.KindRole:
		return string(id.Role) == t.Value
	case subjects.KindDevice:
		return id.Role == auth.RoleDevice && id.SN == t.Value
	case subjects.KindType:
		return id.Role == auth.RoleDevice && id.Type == t.Value
	case subjects.KindUser:
		return id.Role != auth.RoleDevice && id.User == t.Value
	case subjects.KindGroup:
		return id.hasGroup(t.Value)
	}
	return false
}

// hasGroup: a device's own group, or a group an admin names explicitly.
func (id *Identity) hasGroup(g string) bool {
	if id.Role == auth.RoleDevice {
		return id.Group == g
	}
	return auth.NamesGroup(id.Groups, g)
}

// matchesWhere reports whether the session has every attribute of where
// (the keys are schema.WhereKeys; PushBody.Check refuses others).
func (id *Identity) matchesWhere(where map[string]string) bool {
	for k, v := range where {
		var ok bool
		switch k {
		case "sn":
			ok = id.Role == auth.RoleDevice && id.SN == v
		case "user":
			ok = id.Role != auth.RoleDevice && id.User == v
		case "role":
			ok = string(id.Role) == v
		case "type":
			ok = id.Role == auth.RoleDevice && id.Type == v
		case "group":
			ok = id.hasGroup(v)
		}
		if !ok {
			return false
		}
	}
	return true
}

// whereInterest is the interest (push subject) that holds every session
// with attribute key = value: a smaller set to walk than the target's, for
// a push with that where condition. An error means no session can have
// that attribute.
func whereInterest(key, value string) (string, error) {
	switch key {
	case "sn":
		return subjects.DevicePush(value)
	case "user":
		return subjects.UserPush(value)
	case "role":
		return subjects.RolePush(value)
	case "type":
		return subjects.TypePush(value)
	case "group":
		return subjects.GroupPush(value)
	}
	return "", fmt.Errorf("where: unknown attribute %q", key)
}

// mayPush enforces group scope: an admin whose groups are not "*" may push
// only where every device it reaches is in its groups. Pushes to admin
// users and roles are not about devices and are allowed; pushes that could
// reach devices of any group (all, a type, the device role) need a where
// group of the admin's.
func (srv *Server) mayPush(id *Identity, t subjects.Target, where map[string]string) *wire.Error {
	if auth.CanSee(id.Groups, "*") {
		return nil
	}
	if g, ok := where["group"]; ok && auth.CanSee(id.Groups, g) {
		return nil
	}
	switch t.Kind {
	case subjects.KindUser:
		return nil
	case subjects.KindRole:
		if t.Value != string(auth.RoleDevice) {
			return nil
		}
	case subjects.KindGroup:
		if auth.CanSee(id.Groups, t.Value) {
			return nil
		}
	case subjects.KindDevice:
		if auth.CanSee(id.Groups, srv.deviceGroup(t.Value)) {
			return nil
		}
		return wire.Errorf(wire.CodeForbidden, "device "+t.Value+" is outside your groups")
	}
	groups := append([]string(nil), id.Groups...)
	sort.Strings(groups)
	return wire.Errorf(wire.CodeForbidden, fmt.Sprintf("push to %s may reach devices outside your groups %v; add a where group", t, groups))
}

// deviceGroup is the group of a device: its registry entry's, or "default"
// for an unregistered device.
func (srv *Server) deviceGroup(sn string) string {
	if d, ok := srv.registry.get(sn); ok {
		return d.Group
	}
	return "default"
}

// wants reports whether the subscription covers topic t, and for events
// whether prio reaches its min_priority.
func (sub subscription) wants(t topic, prio int) bool {
	return sub.topics&t != 0 && (t != topicEvent || prio >= sub.minPriority)
}

// maxScopedGroups is how many groups a user may see for the node to watch
// them one by one; past it the node watches sel as it is and deliver
// filters by group, rather than hold hundreds of subscriptions for one
// selector.
const maxScopedGroups = 32

// watchSelectors are the watch selectors (see watchKey) through which the
// node receives the records a session subscribed under sel may be given.
// For a user who may see every group, that is sel itself. For one limited
// to some groups, "all" and a type become one pattern per visible group,
// and a group it may not see becomes nothing, so that the node receives
// no record of a group the user may not see: its cost follows what the
// user is shown. A device selector stays as it is (its group is not known
// until its records arrive; deliver checks it).
func watchSelectors(id *Identity, sel string) []string {
	if id == nil || len(id.Groups) > maxScopedGroups || slices.Contains(id.Groups, auth.AllGroups) {
		return []string{sel}
	}
	kind, value, _ := strings.Cut(sel, ":")
	var out []string
	switch kind {
	case "all":
		for _, g := range id.Groups {
			out = append(out, "group:"+g)
		}
	case "type":
		for _, g := range id.Groups {
			out = append(out, "gtype:"+g+"."+value)
		}
	case "group":
		if auth.CanSee(id.Groups, value) {
			out = append(out, sel)
		}
	default:
		out = append(out, sel)
	}
	return out
}
