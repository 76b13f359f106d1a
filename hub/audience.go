package hub

import (
	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/subjects"
)

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

// whereKeys are the session attributes a conditional push may test.
var whereKeys = []string{"sn", "user", "role", "type", "group"}

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

// matchesWhere reports whether the session has every attribute of where.
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
