package auth

import (
	"errors"
	"fmt"
	"strings"
)

// Role is what a client may do. Devices get RoleDevice from a device proof;
// people get RoleAdmin or RoleViewer from their stored User.
type Role string

// The roles. RoleDevice is never stored in a User or a token: robots always
// authenticate with a fresh device proof instead.
const (
	RoleDevice Role = "device"
	RoleAdmin  Role = "admin"
	RoleViewer Role = "viewer"
)

// AllGroups is the group wildcard: a user or token holding it sees every
// group.
const AllGroups = "*"

const allGroups = AllGroups

// ParseRole accepts "admin" or "viewer" (the roles a user may have); anything
// else, including "device", is ErrBadRole.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleViewer:
		return r, nil
	}
	return "", ErrBadRole
}

// ValidUsername reports whether name is 1 to 64 characters of A-Z a-z 0-9 _ -,
// because it becomes a NATS subject token and a KV key.
func ValidUsername(name string) bool { return validName(name) }

// ValidGroup reports whether g is "*" (all groups) or 1 to 64 characters of
// A-Z a-z 0-9 _ -, the same NATS- and KV-safe charset as serials.
func ValidGroup(g string) bool { return g == allGroups || validName(g) }

// ParseGroups parses a comma-separated group list as typed by an admin
// ("a,b" or "*"): it trims spaces, drops empty items and duplicates, keeping
// order. Any invalid item, or nothing left, is ErrBadGroup wrapped with the
// offending value. If "*" is present the result is exactly ["*"], since it
// already covers everything.
func ParseGroups(s string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" || seen[g] {
			continue
		}
		if !ValidGroup(g) {
			return nil, fmt.Errorf("%w: %q", ErrBadGroup, g)
		}
		seen[g] = true
		out = append(out, g)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty list", ErrBadGroup)
	}
	if seen[allGroups] {
		return []string{allGroups}, nil
	}
	return out, nil
}

// User is a stored admin or viewer account (JSON stored in a KV bucket).
type User struct {
	Name         string   `json:"name"`
	Role         Role     `json:"role"`
	Groups       []string `json:"groups"`
	PasswordHash string   `json:"password_hash"`
	UpdatedAt    int64    `json:"updated_at"` // ms since epoch of the last password/role change; tokens issued before it are refused by the caller
}

// Validate checks a User before it is stored or after it is loaded, so a
// corrupt record cannot grant access. It reports every problem, joined.
func (u User) Validate() error {
	var errs []error
	if !ValidUsername(u.Name) {
		errs = append(errs, fmt.Errorf("%w: %q", ErrBadUsername, u.Name))
	}
	if _, err := ParseRole(string(u.Role)); err != nil {
		errs = append(errs, fmt.Errorf("%w: %q", ErrBadRole, u.Role))
	}
	errs = append(errs, validGroups(u.Groups))
	if u.PasswordHash == "" {
		errs = append(errs, errors.New("auth: empty password hash"))
	}
	return errors.Join(errs...)
}

// validGroups checks a stored or token group list: non-empty, each valid.
func validGroups(groups []string) error {
	if len(groups) == 0 {
		return fmt.Errorf("%w: empty list", ErrBadGroup)
	}
	for _, g := range groups {
		if !ValidGroup(g) {
			return fmt.Errorf("%w: %q", ErrBadGroup, g)
		}
	}
	return nil
}

// CanSee reports whether groups (a token's or user's groups) include group,
// "*" meaning all. Use it for read access to a group's robots.
func CanSee(groups []string, group string) bool {
	for _, g := range groups {
		if g == allGroups || g == group {
			return true
		}
	}
	return false
}

// NamesGroup reports whether groups name group explicitly ("*" does not
// count), for decisions where a wildcard should not be enough on its own.
func NamesGroup(groups []string, group string) bool {
	for _, g := range groups {
		if g == group && g != allGroups {
			return true
		}
	}
	return false
}
