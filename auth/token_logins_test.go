package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestTokenLifetimeBoundedByTTL: a correctly signed token whose exp - iat
// is longer than the verifier's TTL is refused, however it was minted; one
// with the TTL or less is accepted.
func TestTokenLifetimeBoundedByTTL(t *testing.T) {
	c := &clock{testNow}
	verifier := newTestTokens(t, testTokenKey, "", c) // TTL 1h
	long, err := NewTokens(TokenConfig{Key: testTokenKey, TTL: 2 * time.Hour, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	short, err := NewTokens(TokenConfig{Key: testTokenKey, TTL: time.Minute, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	hs256 := jwt.SigningMethodHS256
	tests := []struct {
		name string
		tok  func() string
		ok   bool
	}{
		{"issued with the same TTL", func() string { s, _, _ := verifier.Issue("alice", RoleAdmin, []string{"*"}, 1); return s }, true},
		{"issued with a shorter TTL", func() string { s, _, _ := short.Issue("alice", RoleAdmin, []string{"*"}, 1); return s }, true},
		{"issued with a longer TTL", func() string { s, _, _ := long.Issue("alice", RoleAdmin, []string{"*"}, 1); return s }, false},
		{"one second too long", func() string {
			return signMap(t, hs256, testTokenKey, goodClaims(func(m jwt.MapClaims) { m["exp"] = testNow.Add(time.Hour + time.Second).Unix() }))
		}, false},
		{"a year, iat in the past", func() string {
			return signMap(t, hs256, testTokenKey, goodClaims(func(m jwt.MapClaims) {
				m["iat"] = testNow.Add(-time.Minute).Unix()
				m["exp"] = testNow.Add(365 * 24 * time.Hour).Unix()
			}))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verifier.Verify(tt.tok())
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok {
				if !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "lifetime") {
					t.Fatalf("Verify = %v, want ErrTokenInvalid naming the lifetime", err)
				}
			}
		})
	}
}

// TestTokenGeneration: the account version a token is issued for comes
// back from Verify; a token without the claim says so.
func TestTokenGeneration(t *testing.T) {
	c := &clock{testNow}
	tk := newTestTokens(t, testTokenKey, "", c)
	for _, gen := range []int64{0, 1, 1_800_000_000_123} {
		tok, issued, err := tk.Issue("alice", RoleAdmin, []string{"*"}, gen)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tk.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if !got.HasGeneration || got.Generation != gen || !issued.HasGeneration || issued.Generation != gen {
			t.Fatalf("gen %d: verified %+v, issued %+v", gen, got, issued)
		}
	}
	legacy := signMap(t, jwt.SigningMethodHS256, testTokenKey, goodClaims(nil))
	got, err := tk.Verify(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if got.HasGeneration {
		t.Fatalf("a token without gen verified with one: %+v", got)
	}
	bad := signMap(t, jwt.SigningMethodHS256, testTokenKey, goodClaims(func(m jwt.MapClaims) { m["gen"] = "soon" }))
	if _, err := tk.Verify(bad); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("gen as a string: %v, want ErrTokenInvalid", err)
	}
}
