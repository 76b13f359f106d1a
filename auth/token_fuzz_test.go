package auth

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func FuzzTokenVerify(f *testing.F) {
	c := &clock{testNow}
	tk := newTestTokens(f, testTokenKey, "", c)
	// Deterministic (fixed jti, sorted JSON keys) so the fuzzing workers,
	// which rerun this setup, agree on which single token is genuine.
	valid := signMap(f, jwt.SigningMethodHS256, testTokenKey, goodClaims(nil))
	if _, err := tk.Verify(valid); err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add(noneHeader() + "." + strings.Split(valid, ".")[1] + ".")
	f.Add(signMap(f, jwt.SigningMethodHS512, testTokenKey, goodClaims(nil)))
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := tk.Verify(tok)
		if err == nil {
			// Only the exact issued token may verify: anything else would
			// be a forgery (strict decoding makes the encoding canonical).
			if tok != valid {
				t.Fatalf("verified a token that was never issued: %+v", got)
			}
			return
		}
		if !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("Verify error %v is not ErrTokenInvalid", err)
		}
	})
}

// FuzzTokenMutation edits one issued token a byte at a time (replaced,
// inserted or removed, anywhere): no edit ever verifies.
func FuzzTokenMutation(f *testing.F) {
	tk := newTestTokens(f, testTokenKey, "", &clock{testNow})
	valid := signMap(f, jwt.SigningMethodHS256, testTokenKey, goodClaims(nil))
	for _, seed := range []struct {
		op  uint8
		pos uint16
		b   byte
	}{{0, 0, 'f'}, {0, 35, '.'}, {1, uint16(len(valid)), '='}, {2, uint16(len(valid) - 1), 0}, {0, uint16(len(valid) - 1), 'A'}, {1, 36, 'A'}} {
		f.Add(seed.op, seed.pos, seed.b)
	}
	f.Fuzz(func(t *testing.T, op uint8, pos uint16, b byte) {
		i := int(pos) % (len(valid) + 1)
		var tok string
		switch op % 3 {
		case 0: // replace
			if i == len(valid) || valid[i] == b {
				return
			}
			tok = valid[:i] + string([]byte{b}) + valid[i+1:]
		case 1: // insert
			tok = valid[:i] + string([]byte{b}) + valid[i:]
		default: // remove
			if i == len(valid) {
				return
			}
			tok = valid[:i] + valid[i+1:]
		}
		if c, err := tk.Verify(tok); err == nil {
			t.Fatalf("token edited at %d (op %d, byte %q) verified: %+v", i, op%3, b, c)
		} else if !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("edited token: error %v is not ErrTokenInvalid", err)
		}
	})
}

// FuzzTokenRoundTrip: Issue refuses exactly what Verify would refuse, and
// every token it hands out verifies to the claims it returned.
func FuzzTokenRoundTrip(f *testing.F) {
	tk := newTestTokens(f, testTokenKey, "", &clock{testNow})
	f.Add("alice", "admin", "lab,warehouse-1")
	f.Add("bob", "viewer", "*")
	f.Add("root", "device", "*")
	f.Add("a.b", "admin", "g")
	f.Add("x", "admin", "")
	f.Add("x", "viewer", "g,,h")
	f.Add(strings.Repeat("u", 65), "admin", "*,g")
	f.Fuzz(func(t *testing.T, user, role, groupList string) {
		groups := strings.Split(groupList, ",")
		tok, issued, err := tk.Issue(user, Role(role), groups, 7)
		_, roleErr := ParseRole(role)
		valid := ValidUsername(user) && roleErr == nil && validGroups(groups) == nil
		if err != nil {
			if valid {
				t.Fatalf("Issue(%q, %q, %q) refused valid claims: %v", user, role, groups, err)
			}
			if !errors.Is(err, ErrBadUsername) && !errors.Is(err, ErrBadRole) && !errors.Is(err, ErrBadGroup) {
				t.Fatalf("Issue error %v is not a claims error", err)
			}
			return
		}
		if !valid {
			t.Fatalf("Issue(%q, %q, %q) accepted invalid claims", user, role, groups)
		}
		got, err := tk.Verify(tok)
		if err != nil {
			t.Fatalf("issued token refused: %v", err)
		}
		if !reflect.DeepEqual(got, issued) {
			t.Fatalf("token verified to %+v, issued %+v", got, issued)
		}
	})
}
