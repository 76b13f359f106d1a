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
