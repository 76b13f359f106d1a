package auth

import "errors"

// Sentinel errors. Callers match them with errors.Is; several are returned
// wrapped with a short reason, so never compare with ==. The messages are
// safe to show to a client: none of them carries secrets or token text.
var (
	// ErrBadSerial means a device serial number is empty, too long or uses
	// characters outside A-Z a-z 0-9 _ -.
	ErrBadSerial = errors.New("auth: invalid serial number")
	// ErrBadNonce means a device nonce is empty, longer than 128 bytes or
	// not printable ASCII.
	ErrBadNonce = errors.New("auth: invalid nonce")
	// ErrClockSkew means a device timestamp is too far from the hub's clock,
	// which bounds how long a captured proof could be replayed.
	ErrClockSkew = errors.New("auth: timestamp outside allowed clock skew")
	// ErrBadSignature means a device proof was not signed with the device's key.
	ErrBadSignature = errors.New("auth: bad signature")
	// ErrReplay means a nonce was presented a second time.
	ErrReplay = errors.New("auth: nonce already used")
	// ErrTokenExpired means a correctly signed token is past its expiry. It
	// is kept apart from ErrTokenInvalid so a client knows to log in again.
	ErrTokenExpired = errors.New("auth: token expired")
	// ErrTokenInvalid covers every other reason a token is refused.
	ErrTokenInvalid = errors.New("auth: invalid token")
	// ErrBadPassword is deliberately vague so a login failure does not
	// reveal whether the user exists.
	ErrBadPassword = errors.New("auth: wrong username or password")
	// ErrWeakPassword means a password is empty or longer than bcrypt can use.
	ErrWeakPassword = errors.New("auth: password must be 1 to 72 bytes")
	// ErrBadUsername means a username is not 1 to 64 of A-Z a-z 0-9 _ -.
	ErrBadUsername = errors.New("auth: invalid username")
	// ErrBadRole means a role is not one a user account may hold.
	ErrBadRole = errors.New("auth: invalid role")
	// ErrBadGroup means a group name or group list is invalid.
	ErrBadGroup = errors.New("auth: invalid group")
)
