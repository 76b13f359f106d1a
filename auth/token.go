package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token defaults and limits.
const (
	// DefaultTokenTTL is the token lifetime when TokenConfig.TTL is zero: a
	// working day, so people log in about once a day.
	DefaultTokenTTL = 24 * time.Hour
	// DefaultIssuer is the iss claim when TokenConfig.Issuer is empty.
	DefaultIssuer = "fleethub"
	// MinTokenKeyLen is the shortest accepted signing key: HS256 wants a key
	// at least as long as its output.
	MinTokenKeyLen = 32

	// maxTokenLen bounds the work done on hostile input; real tokens are a
	// few hundred bytes.
	maxTokenLen = 8 << 10
	// maxIssuedAtDrift tolerates clock differences between hub nodes: a
	// token may carry an iat this far in the verifier's future.
	maxIssuedAtDrift = time.Minute
)

// TokenKey derives the token signing key: HMAC-SHA256(masterSecret,
// "admin-token:v1"), so every node with the same master secret verifies every
// other node's tokens. The label separates it from device keys, and the
// version allows rotating the derivation later.
func TokenKey(masterSecret []byte) []byte {
	m := hmac.New(sha256.New, masterSecret)
	m.Write([]byte("admin-token:v1"))
	return m.Sum(nil)
}

// TokenConfig configures Tokens.
type TokenConfig struct {
	Key    []byte           // required, >= 32 bytes; usually TokenKey(master)
	TTL    time.Duration    // default DefaultTokenTTL; at least 1s otherwise
	Issuer string           // default DefaultIssuer
	Now    func() time.Time // default time.Now; tests inject a clock
}

// Claims is what a verified token says about its holder.
type Claims struct {
	User      string
	Role      Role
	Groups    []string
	IssuedAt  time.Time // whole seconds, as written in the token
	ExpiresAt time.Time // whole seconds, as written in the token
	ID        string    // jti, random 16 bytes hex
	// Generation is the version of the account the token was issued for
	// (User.UpdatedAt, in ms), claim "gen". A verifier refuses the token
	// once the account's version is another one, so a password change
	// revokes every token issued before it, even in the same second.
	// HasGeneration is false for a token without the claim (issued before
	// the claim existed); see the hub's CheckToken for how those are
	// treated.
	Generation    int64
	HasGeneration bool
}

// jwtClaims is the wire form of Claims.
type jwtClaims struct {
	Role       string   `json:"role"`
	Groups     []string `json:"groups"`
	Generation *int64   `json:"gen,omitempty"`
	jwt.RegisteredClaims
}

// Tokens issues and verifies HS256 session tokens for admins and viewers.
// It is safe for concurrent use.
type Tokens struct {
	key    []byte
	ttl    time.Duration
	issuer string
	now    func() time.Time
	parser *jwt.Parser
}

// NewTokens validates cfg, filling defaults, and reports every problem at
// once (joined with errors.Join).
func NewTokens(cfg TokenConfig) (*Tokens, error) {
	var errs []error
	if len(cfg.Key) < MinTokenKeyLen {
		errs = append(errs, fmt.Errorf("auth: token config: key must be at least %d bytes", MinTokenKeyLen))
	}
	if cfg.TTL < 0 || (cfg.TTL > 0 && cfg.TTL < time.Second) {
		errs = append(errs, errors.New("auth: token config: TTL must be zero (default) or at least 1s"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t := &Tokens{
		key:    append([]byte(nil), cfg.Key...), // copy: caller may reuse its slice
		ttl:    cfg.TTL,
		issuer: cfg.Issuer,
		now:    cfg.Now,
	}
	if t.ttl == 0 {
		t.ttl = DefaultTokenTTL
	}
	if t.issuer == "" {
		t.issuer = DefaultIssuer
	}
	if t.now == nil {
		t.now = time.Now
	}
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(t.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now),
		// Strict base64 makes the encoding canonical: a token that differs
		// from an issued one in any byte fails, instead of verifying.
		jwt.WithStrictDecoding(),
	)
	return t, nil
}

// TTL returns the lifetime of issued tokens, e.g. for a cookie's Max-Age.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue signs a token for user with role and groups, for the version gen of
// the account (its User.UpdatedAt). The JWT claims are sub, iss, iat, exp,
// jti, role, groups and gen. It refuses what Verify would refuse
// (ErrBadUsername, ErrBadRole, ErrBadGroup) so a bad token is never handed
// out. IssuedAt in the returned Claims is truncated to the second exactly as
// written.
func (t *Tokens) Issue(user string, role Role, groups []string, gen int64) (token string, c Claims, err error) {
	if !ValidUsername(user) {
		return "", Claims{}, ErrBadUsername
	}
	if _, err := ParseRole(string(role)); err != nil {
		return "", Claims{}, err
	}
	if err := validGroups(groups); err != nil {
		return "", Claims{}, err
	}
	iat := time.Unix(t.now().Unix(), 0)
	exp := time.Unix(iat.Add(t.ttl).Unix(), 0)
	var id [16]byte
	rand.Read(id[:]) // never fails since Go 1.24
	c = Claims{
		User:          user,
		Role:          role,
		Groups:        slices.Clone(groups),
		IssuedAt:      iat,
		ExpiresAt:     exp,
		ID:            hex.EncodeToString(id[:]),
		Generation:    gen,
		HasGeneration: true,
	}
	jc := jwtClaims{
		Role:       string(role),
		Groups:     c.Groups,
		Generation: &gen,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			Issuer:    t.issuer,
			IssuedAt:  jwt.NewNumericDate(iat),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        c.ID,
		},
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, jc).SignedString(t.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("auth: sign token: %w", err)
	}
	return token, c, nil
}

// Verify parses token and checks the signature (HS256 only: "none" and every
// other alg are refused, so a token cannot choose its own verification),
// issuer, exp and iat (both required), that exp - iat is at most the
// verifier's TTL (a token minted with a longer lifetime is refused, even
// correctly signed), role (admin or viewer), groups (non-empty, valid) and
// that sub is a valid username. A correctly signed but
// expired token is ErrTokenExpired; anything else is ErrTokenInvalid wrapped
// with a short reason. Errors never include the token text, which is a
// credential.
func (t *Tokens) Verify(token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: too long", ErrTokenInvalid)
	}
	if !tokenChars(token) {
		return Claims{}, fmt.Errorf("%w: malformed", ErrTokenInvalid)
	}
	var jc jwtClaims
	_, err := t.parser.ParseWithClaims(token, &jc, func(tok *jwt.Token) (any, error) {
		// WithValidMethods already pins the alg; checking again is cheap
		// insurance against a parser option being dropped by mistake.
		if tok.Method != jwt.SigningMethodHS256 {
			return nil, errors.New("unexpected signing method")
		}
		return t.key, nil
	})
	// The parser only reports claim errors after the signature checked out,
	// so an expired token here is genuinely ours. It is still reported as
	// invalid if anything else is wrong with it.
	expired := errors.Is(err, jwt.ErrTokenExpired) &&
		!errors.Is(err, jwt.ErrTokenInvalidIssuer) &&
		!errors.Is(err, jwt.ErrTokenRequiredClaimMissing) &&
		!errors.Is(err, jwt.ErrTokenNotValidYet)
	if err != nil && !expired {
		return Claims{}, fmt.Errorf("%w: %s", ErrTokenInvalid, jwtReason(err))
	}
	c, err := t.claims(jc)
	if err != nil {
		return Claims{}, err
	}
	if expired {
		return Claims{}, ErrTokenExpired
	}
	return c, nil
}

// tokenChars reports whether token holds only what an issued token does:
// base64url and the dots between its parts. encoding/base64 skips '\r' and
// '\n' even in strict mode, so without this check a token with a line
// break anywhere in it would verify as the token without.
func tokenChars(token string) bool {
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// claims checks the parts of a signed token the jwt parser does not and
// converts it to Claims.
func (t *Tokens) claims(jc jwtClaims) (Claims, error) {
	invalid := func(reason string) (Claims, error) {
		return Claims{}, fmt.Errorf("%w: %s", ErrTokenInvalid, reason)
	}
	if jc.IssuedAt == nil {
		return invalid("missing iat")
	}
	if jc.ExpiresAt == nil { // the parser requires exp; never panic if that changes
		return invalid("missing exp")
	}
	if jc.IssuedAt.After(t.now().Add(maxIssuedAtDrift)) {
		return invalid("issued in the future")
	}
	// The lifetime a token claims is bounded by this verifier's TTL: a
	// token minted elsewhere with a longer one (a node or tool with a
	// larger --token-ttl, or a leaked key used to mint long-lived tokens)
	// does not outlive what this node's operator chose.
	if jc.ExpiresAt.Sub(jc.IssuedAt.Time) > t.ttl {
		return invalid("lifetime longer than the token TTL")
	}
	if !ValidUsername(jc.Subject) {
		return invalid("bad subject")
	}
	role, err := ParseRole(jc.Role)
	if err != nil {
		return invalid("bad role")
	}
	if validGroups(jc.Groups) != nil {
		return invalid("bad groups")
	}
	c := Claims{
		User:      jc.Subject,
		Role:      role,
		Groups:    jc.Groups,
		IssuedAt:  jc.IssuedAt.Time,
		ExpiresAt: jc.ExpiresAt.Time,
		ID:        jc.ID,
	}
	if jc.Generation != nil {
		c.Generation, c.HasGeneration = *jc.Generation, true
	}
	return c, nil
}

// jwtReason maps a jwt error to a fixed short reason. jwt's own messages can
// quote decoded token content, so they are not passed on.
func jwtReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing claim"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	default:
		return "invalid claims"
	}
}
