package auth

import (
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// maxPasswordLen is bcrypt's input limit; longer passwords would be silently
// truncated by some implementations, so they are refused instead.
const maxPasswordLen = 72

// HashPassword bcrypt-hashes pw with cost (bcrypt.DefaultCost when cost == 0).
// Empty or over 72 bytes is ErrWeakPassword. A cost outside bcrypt's range is
// an error rather than silently replaced, so a typo cannot weaken hashes.
func HashPassword(pw string, cost int) (string, error) {
	if len(pw) == 0 || len(pw) > maxPasswordLen {
		return "", ErrWeakPassword
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return "", fmt.Errorf("auth: bcrypt cost %d outside %d..%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return string(h), nil
}

// dummyHash is compared against when the real hash is missing or corrupt, so
// such logins cost as much time as a real one.
var dummyHash = sync.OnceValue(func() []byte {
	h, err := bcrypt.GenerateFromPassword([]byte("fleethub-dummy-password"), bcrypt.DefaultCost)
	if err != nil {
		panic(err) // cannot happen: constant input, valid cost
	}
	return h
})

// CheckPassword returns nil if pw matches hash, else ErrBadPassword; it never
// says which part was wrong. Pass an empty hash for an unknown user: the check
// then still runs bcrypt, so timing does not reveal which usernames exist.
func CheckPassword(hash, pw string) error {
	if len(pw) == 0 || len(pw) > maxPasswordLen {
		return ErrBadPassword // no stored hash can match, and length is no secret
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(pw))
		return ErrBadPassword
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) != nil {
		return ErrBadPassword
	}
	return nil
}
