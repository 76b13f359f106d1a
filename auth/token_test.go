package auth

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clock is a settable time source shared by issuer and verifier in a test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestTokens(t testing.TB, key []byte, issuer string, c *clock) *Tokens {
	t.Helper()
	tk, err := NewTokens(TokenConfig{Key: key, TTL: time.Hour, Issuer: issuer, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

var testTokenKey = TokenKey(testMaster)

func TestTokenKeyKnownAnswer(t *testing.T) {
	const want = "79272238fc23eac3c327473dbdf8b54a5d5246ae6ce1c506ed94966f244c3a2d" // Python hmac
	got := hex.EncodeToString(TokenKey(testMaster))
	if got != want || got != hex.EncodeToString(hmacSHA256(testMaster, "admin-token:v1")) {
		t.Fatalf("TokenKey = %s, want %s", got, want)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	c := &clock{time.Unix(1700000000, 987654321)} // sub-second part must be dropped
	tk := newTestTokens(t, testTokenKey, "", c)
	groups := []string{"warehouse-1", "lab"}
	tok, issued, err := tk.Issue("alice", RoleViewer, groups, 1)
	if err != nil {
		t.Fatal(err)
	}
	groups[0] = "mutated" // Issue must have copied

	wantIat := time.Unix(1700000000, 0)
	if !issued.IssuedAt.Equal(wantIat) || issued.IssuedAt.UnixMilli() != 1700000000000 {
		t.Fatalf("IssuedAt = %v, want %v", issued.IssuedAt, wantIat)
	}
	if !issued.ExpiresAt.Equal(wantIat.Add(time.Hour)) {
		t.Fatalf("ExpiresAt = %v", issued.ExpiresAt)
	}
	if len(issued.ID) != 32 {
		t.Fatalf("ID = %q, want 32 hex chars", issued.ID)
	}
	if _, err := hex.DecodeString(issued.ID); err != nil {
		t.Fatalf("ID not hex: %v", err)
	}

	got, err := tk.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "alice" || got.Role != RoleViewer || got.ID != issued.ID ||
		strings.Join(got.Groups, ",") != "warehouse-1,lab" ||
		!got.IssuedAt.Equal(issued.IssuedAt) || !got.ExpiresAt.Equal(issued.ExpiresAt) {
		t.Fatalf("Verify = %+v, issued %+v", got, issued)
	}

	_, again, _ := tk.Issue("alice", RoleViewer, []string{"lab"}, 1)
	if again.ID == issued.ID {
		t.Fatal("two tokens share a jti")
	}
}

func TestTokenDefaults(t *testing.T) {
	tk, err := NewTokens(TokenConfig{Key: testTokenKey})
	if err != nil {
		t.Fatal(err)
	}
	if tk.TTL() != 24*time.Hour {
		t.Fatalf("TTL = %v", tk.TTL())
	}
	tok, c, err := tk.Issue("root", RoleAdmin, []string{"*"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.ExpiresAt.Sub(c.IssuedAt); d != 24*time.Hour {
		t.Fatalf("lifetime = %v", d)
	}
	// A verifier explicitly expecting "fleethub" accepts it.
	explicit, err := NewTokens(TokenConfig{Key: testTokenKey, Issuer: "fleethub"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := explicit.Verify(tok); err != nil {
		t.Fatalf("default issuer is not fleethub: %v", err)
	}
}

func TestNewTokensConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     TokenConfig
		wantErr []string
	}{
		{"ok", TokenConfig{Key: make([]byte, 32)}, nil},
		{"no key", TokenConfig{}, []string{"key"}},
		{"31 byte key", TokenConfig{Key: make([]byte, 31)}, []string{"key"}},
		{"negative ttl", TokenConfig{Key: make([]byte, 32), TTL: -time.Hour}, []string{"TTL"}},
		{"sub-second ttl", TokenConfig{Key: make([]byte, 32), TTL: time.Millisecond}, []string{"TTL"}},
		{"both", TokenConfig{TTL: -1}, []string{"key", "TTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTokens(tt.cfg)
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Fatalf("NewTokens err = %v", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTokenIssueRejects(t *testing.T) {
	tk := newTestTokens(t, testTokenKey, "", &clock{testNow})
	tests := []struct {
		name   string
		user   string
		role   Role
		groups []string
		want   error
	}{
		{"bad user", "a b", RoleAdmin, []string{"*"}, ErrBadUsername},
		{"empty user", "", RoleAdmin, []string{"*"}, ErrBadUsername},
		{"device role", "bob", RoleDevice, []string{"*"}, ErrBadRole},
		{"empty role", "bob", "", []string{"*"}, ErrBadRole},
		{"no groups", "bob", RoleViewer, nil, ErrBadGroup},
		{"bad group", "bob", RoleViewer, []string{"ok", "a.b"}, ErrBadGroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := tk.Issue(tt.user, tt.role, tt.groups, 1)
			if !errors.Is(err, tt.want) || tok != "" {
				t.Fatalf("Issue = %q, %v; want %v", tok, err, tt.want)
			}
		})
	}
}

func TestTokenExpiry(t *testing.T) {
	c := &clock{testNow}
	tk := newTestTokens(t, testTokenKey, "", c)
	tok, _, err := tk.Issue("alice", RoleAdmin, []string{"*"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		at   time.Time
		want error
	}{
		{"just issued", testNow, nil},
		{"last second", testNow.Add(time.Hour - time.Second), nil},
		{"at exp", testNow.Add(time.Hour), ErrTokenExpired},
		{"long after", testNow.Add(30 * 24 * time.Hour), ErrTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = tt.at
			_, err := tk.Verify(tok)
			if err != tt.want {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// signMap signs arbitrary claims with method and key, for hostile tokens.
func signMap(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// goodClaims returns valid wire claims at testNow, edited by mod.
func goodClaims(mod func(jwt.MapClaims)) jwt.MapClaims {
	m := jwt.MapClaims{
		"sub": "alice", "iss": "fleethub", "role": "admin", "groups": []string{"lab"},
		"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(), "jti": "00",
	}
	if mod != nil {
		mod(m)
	}
	return m
}

func TestTokenVerifyRejects(t *testing.T) {
	c := &clock{testNow}
	tk := newTestTokens(t, testTokenKey, "", c)
	valid, _, err := tk.Issue("alice", RoleViewer, []string{"lab"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, _ := newTestTokens(t, TokenKey([]byte("other master")), "", c).Issue("alice", RoleAdmin, []string{"*"}, 1)
	otherIss, _, _ := newTestTokens(t, testTokenKey, "someone-else", c).Issue("alice", RoleAdmin, []string{"*"}, 1)
	parts := strings.Split(valid, ".")
	hs256 := jwt.SigningMethodHS256
	sign := func(mod func(jwt.MapClaims)) string { return signMap(t, hs256, testTokenKey, goodClaims(mod)) }

	tests := []struct {
		name string
		tok  string
	}{
		{"empty", ""},
		{"garbage", "not a token"},
		{"dots", ".."},
		{"three words", "a.b.c"},
		{"two parts", parts[0] + "." + parts[1]},
		{"four parts", valid + ".x"},
		{"huge", strings.Repeat("A", 100000)},
		{"forged other key", forged},
		{"wrong issuer", otherIss},
		{"alg none", signMap(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, goodClaims(nil))},
		{"alg none no sig", noneHeader() + "." + parts[1] + "."},
		{"alg HS512 same key", signMap(t, jwt.SigningMethodHS512, testTokenKey, goodClaims(nil))},
		{"alg HS384 same key", signMap(t, jwt.SigningMethodHS384, testTokenKey, goodClaims(nil))},
		{"tampered payload", parts[0] + "." + tamper(t, parts[1]) + "." + parts[2]},
		{"tampered signature", parts[0] + "." + parts[1] + "." + flipB64(parts[2])},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"padded base64", valid + "="},
		{"missing exp", sign(func(m jwt.MapClaims) { delete(m, "exp") })},
		{"missing iat", sign(func(m jwt.MapClaims) { delete(m, "iat") })},
		{"iat far future", sign(func(m jwt.MapClaims) { m["iat"] = testNow.Add(2 * time.Minute).Unix() })},
		{"nbf future", sign(func(m jwt.MapClaims) { m["nbf"] = testNow.Add(time.Minute).Unix() })},
		{"exp wrong type", sign(func(m jwt.MapClaims) { m["exp"] = "tomorrow" })},
		{"missing issuer", sign(func(m jwt.MapClaims) { delete(m, "iss") })},
		{"missing sub", sign(func(m jwt.MapClaims) { delete(m, "sub") })},
		{"bad sub", sign(func(m jwt.MapClaims) { m["sub"] = "alice.*" })},
		{"role device", sign(func(m jwt.MapClaims) { m["role"] = "device" })},
		{"role root", sign(func(m jwt.MapClaims) { m["role"] = "root" })},
		{"role missing", sign(func(m jwt.MapClaims) { delete(m, "role") })},
		{"role not string", sign(func(m jwt.MapClaims) { m["role"] = 1 })},
		{"groups missing", sign(func(m jwt.MapClaims) { delete(m, "groups") })},
		{"groups empty", sign(func(m jwt.MapClaims) { m["groups"] = []string{} })},
		{"groups bad name", sign(func(m jwt.MapClaims) { m["groups"] = []string{"lab", "a>b"} })},
		{"groups string", sign(func(m jwt.MapClaims) { m["groups"] = "lab" })},
		// Correctly signed and expired, but also wrong in another way: not
		// reported as merely expired.
		{"expired wrong issuer", sign(func(m jwt.MapClaims) { m["iss"] = "x"; m["exp"] = testNow.Add(-time.Hour).Unix() })},
		{"expired no issuer", sign(func(m jwt.MapClaims) { delete(m, "iss"); m["exp"] = testNow.Add(-time.Hour).Unix() })},
		{"expired bad role", sign(func(m jwt.MapClaims) { m["role"] = "device"; m["exp"] = testNow.Add(-time.Hour).Unix() })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tk.Verify(tt.tok)
			if !errors.Is(err, ErrTokenInvalid) || errors.Is(err, ErrTokenExpired) {
				t.Fatalf("Verify = %+v, %v; want ErrTokenInvalid", got, err)
			}
			if got.User != "" || got.Groups != nil {
				t.Fatalf("claims leaked on error: %+v", got)
			}
			if len(tt.tok) > 10 && strings.Contains(err.Error(), tt.tok) {
				t.Fatalf("error contains the token: %v", err)
			}
			for _, p := range strings.Split(tt.tok, ".") {
				if len(p) > 10 && strings.Contains(err.Error(), p) {
					t.Fatalf("error contains a token segment: %v", err)
				}
			}
		})
	}

	// The helper itself must produce acceptable tokens, or the cases above
	// prove nothing.
	if _, err := tk.Verify(sign(nil)); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	if _, err := tk.Verify(sign(func(m jwt.MapClaims) { m["iat"] = testNow.Add(30 * time.Second).Unix() })); err != nil {
		t.Fatalf("iat within node drift refused: %v", err)
	}
}

func noneHeader() string {
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
}

// tamper upgrades a viewer payload to admin, keeping the old signature.
func tamper(t *testing.T, payload string) string {
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), `"viewer"`, `"admin"`, 1)
	if s == string(b) {
		t.Fatal("payload has no viewer role to tamper with")
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

func flipB64(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}
