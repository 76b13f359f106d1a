package auth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseRole(t *testing.T) {
	tests := []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{"admin", RoleAdmin, false},
		{"viewer", RoleViewer, false},
		{"device", "", true},
		{"", "", true},
		{"Admin", "", true},
		{" admin", "", true},
		{"root", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRole(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrBadRole)) {
				t.Fatalf("ParseRole(%q) = %q, %v", tt.in, got, err)
			}
		})
	}
}

func TestValidUsernameAndGroup(t *testing.T) {
	tests := []struct {
		in        string
		user, grp bool
	}{
		{"alice", true, true},
		{"Bob_2-x", true, true},
		{strings.Repeat("u", 64), true, true},
		{strings.Repeat("u", 65), false, false},
		{"", false, false},
		{"*", false, true},
		{"**", false, false},
		{"a*", false, false},
		{"a.b", false, false},
		{"a b", false, false},
		{"a>", false, false},
		{"ålice", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ValidUsername(tt.in); got != tt.user {
				t.Errorf("ValidUsername(%q) = %v", tt.in, got)
			}
			if got := ValidGroup(tt.in); got != tt.grp {
				t.Errorf("ValidGroup(%q) = %v", tt.in, got)
			}
		})
	}
}

func TestParseGroups(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		badPart string // quoted in the error when non-empty
	}{
		{"one", "lab", []string{"lab"}, ""},
		{"two", "a,b", []string{"a", "b"}, ""},
		{"spaces", "  a , b  ", []string{"a", "b"}, ""},
		{"empties dropped", ",a,,b,", []string{"a", "b"}, ""},
		{"dedupe keeps order", "b,a,b,a", []string{"b", "a"}, ""},
		{"star", "*", []string{"*"}, ""},
		{"star wins", "a,*,b", []string{"*"}, ""},
		{"star twice", "*, *", []string{"*"}, ""},
		{"empty", "", nil, "empty"},
		{"only commas", " , ,", nil, "empty"},
		{"bad name", "a,b.c", nil, `"b.c"`},
		{"bad with star", "*,b c", nil, `"b c"`},
		{"inner star", "a*", nil, `"a*"`},
		{"too long", strings.Repeat("g", 65), nil, strings.Repeat("g", 65)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGroups(tt.in)
			if tt.badPart != "" {
				if !errors.Is(err, ErrBadGroup) || !strings.Contains(err.Error(), tt.badPart) || got != nil {
					t.Fatalf("ParseGroups(%q) = %v, %v; want ErrBadGroup naming %s", tt.in, got, err, tt.badPart)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseGroups(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestUserValidate(t *testing.T) {
	good := User{Name: "alice", Role: RoleAdmin, Groups: []string{"lab"}, PasswordHash: "$2a$04$x"}
	edit := func(f func(*User)) User { u := good; f(&u); return u }
	tests := []struct {
		name string
		u    User
		want []error
	}{
		{"ok admin", good, nil},
		{"ok viewer star", edit(func(u *User) { u.Role = RoleViewer; u.Groups = []string{"*"} }), nil},
		{"bad name", edit(func(u *User) { u.Name = "a.b" }), []error{ErrBadUsername}},
		{"device role", edit(func(u *User) { u.Role = RoleDevice }), []error{ErrBadRole}},
		{"empty role", edit(func(u *User) { u.Role = "" }), []error{ErrBadRole}},
		{"no groups", edit(func(u *User) { u.Groups = nil }), []error{ErrBadGroup}},
		{"bad group", edit(func(u *User) { u.Groups = []string{"lab", ""} }), []error{ErrBadGroup}},
		{"no hash", edit(func(u *User) { u.PasswordHash = "" }), nil},
		{"all wrong", User{}, []error{ErrBadUsername, ErrBadRole, ErrBadGroup}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.u.Validate()
			wantFail := len(tt.want) > 0 || tt.u.PasswordHash == ""
			if (err != nil) != wantFail {
				t.Fatalf("Validate = %v, want failure %v", err, wantFail)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Validate = %v, missing %v", err, w)
				}
			}
			if tt.u.PasswordHash == "" && !strings.Contains(err.Error(), "hash") {
				t.Errorf("Validate = %v, does not mention the hash", err)
			}
		})
	}
}

func TestUserJSON(t *testing.T) {
	u := User{Name: "alice", Role: RoleViewer, Groups: []string{"a"}, PasswordHash: "h", UpdatedAt: 42}
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"name":"alice","role":"viewer","groups":["a"],"password_hash":"h","updated_at":42}`
	if string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
}

func TestCanSeeAndNamesGroup(t *testing.T) {
	tests := []struct {
		name        string
		groups      []string
		group       string
		see, explic bool
	}{
		{"member", []string{"a", "b"}, "b", true, true},
		{"not member", []string{"a", "b"}, "c", false, false},
		{"star", []string{"*"}, "c", true, false},
		{"star and named", []string{"*", "c"}, "c", true, true},
		{"star asks star", []string{"*"}, "*", true, false},
		{"none", nil, "a", false, false},
		{"prefix is not member", []string{"ab"}, "a", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CanSee(tt.groups, tt.group); got != tt.see {
				t.Errorf("CanSee = %v", got)
			}
			if got := NamesGroup(tt.groups, tt.group); got != tt.explic {
				t.Errorf("NamesGroup = %v", got)
			}
		})
	}
}
