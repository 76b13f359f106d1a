package auth

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzUserEntry reads a hub_users entry as a node does: an entry that
// passes Validate is an account that can log in, so a token issued for it
// verifies to its name, role and groups.
func FuzzUserEntry(f *testing.F) {
	tk := newTestTokens(f, testTokenKey, "", &clock{testNow})
	for _, s := range []string{
		`{"name":"admin","role":"admin","groups":["*"],"password_hash":"$2a$04$x","updated_at":1}`,
		`{"name":"v","role":"viewer","groups":["g1","g2"],"password_hash":"h"}`,
		`{"name":"d","role":"device","groups":["g"],"password_hash":"h"}`,
		`{"name":"a b","role":"admin","groups":[],"password_hash":""}`,
		`{"name":"x","role":"admin","groups":["*","g"],"password_hash":"h","updated_at":-1}`,
		`{"name":"x","role":"admin","groups":["a.b"],"password_hash":"h","extra":{}}`,
		`{"name":"x","role":"admin","groups":null,"password_hash":"h"}`,
		`null`, `[]`, `{"groups":"g"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var u User
		if json.Unmarshal(data, &u) != nil {
			return
		}
		err := u.Validate()
		if err != nil {
			if !errors.Is(err, ErrBadUsername) && !errors.Is(err, ErrBadRole) && !errors.Is(err, ErrBadGroup) &&
				!strings.Contains(err.Error(), "password hash") {
				t.Fatalf("Validate error %v names no known problem", err)
			}
			return
		}
		tok, _, err := tk.Issue(u.Name, u.Role, u.Groups, u.UpdatedAt)
		if err != nil {
			t.Fatalf("valid user %+v cannot get a token: %v", u, err)
		}
		c, err := tk.Verify(tok)
		if err != nil || c.User != u.Name || c.Role != u.Role || !reflect.DeepEqual(c.Groups, u.Groups) {
			t.Fatalf("valid user %+v: token verified to %+v, %v", u, c, err)
		}
	})
}

// FuzzParseGroups: a group list as an admin types it parses to valid,
// distinct groups taken from the input, "*" alone when present, and
// parsing the result again changes nothing.
func FuzzParseGroups(f *testing.F) {
	for _, s := range []string{"a,b", "*", "a, *", " a ,a,,b ", "", ",", "a.b", "a,b c", "\u00a0a", "*,*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		groups, err := ParseGroups(s)
		if err != nil {
			if !errors.Is(err, ErrBadGroup) {
				t.Fatalf("ParseGroups(%q) error %v is not ErrBadGroup", s, err)
			}
			return
		}
		if err := validGroups(groups); err != nil {
			t.Fatalf("ParseGroups(%q) = %q: %v", s, groups, err)
		}
		items := strings.Split(s, ",")
		for i := range items {
			items[i] = strings.TrimSpace(items[i])
		}
		for i, g := range groups {
			if !slices.Contains(items, g) {
				t.Fatalf("ParseGroups(%q) = %q invents %q", s, groups, g)
			}
			if slices.Contains(groups[:i], g) {
				t.Fatalf("ParseGroups(%q) = %q repeats %q", s, groups, g)
			}
		}
		if slices.Contains(groups, allGroups) && len(groups) != 1 {
			t.Fatalf("ParseGroups(%q) = %q: \"*\" with others", s, groups)
		}
		again, err := ParseGroups(strings.Join(groups, ","))
		if err != nil || !slices.Equal(again, groups) {
			t.Fatalf("ParseGroups(%q) = %q, then %q, %v", s, groups, again, err)
		}
	})
}
