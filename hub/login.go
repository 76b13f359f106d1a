package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/auth"
)

// Login checks a username and password from the client at remote (its
// address, "host:port" or a bare host) and issues a token.
//
// Failed logins are throttled per address and per username
// (loginlimit.go): an attempt refused by throttling returns a
// *ThrottledError (errors.Is ErrThrottled) before any bcrypt work is
// spent on it. Concurrent bcrypt work is bounded node-wide, so that a
// login flood cannot take every core, and one address has at most one
// check in flight (the next few wait for their turn), so that it cannot
// hold every bcrypt slot.
func (srv *Server) Login(ctx context.Context, remote, username, password string) (string, auth.Claims, error) {
	if !srv.started.Load() {
		return "", auth.Claims{}, ErrStopped // the user store is not loaded yet
	}
	attempt, err := srv.logins.begin(ctx, remote, username)
	if err != nil {
		if errors.Is(err, ErrThrottled) {
			srv.metrics.authFailures.WithLabelValues("throttled").Inc()
		}
		return "", auth.Claims{}, err
	}
	select {
	case srv.bcrypt <- struct{}{}:
		defer func() { <-srv.bcrypt }()
	case <-ctx.Done():
		attempt.abandoned()
		return "", auth.Claims{}, ctx.Err()
	}
	u, ok := srv.users.get(username)
	if !ok {
		// Compare against a hash of the configured cost anyway, so that a
		// wrong username costs the same time as a wrong password.
		_ = auth.CheckPassword(srv.dummyHash, password)
		attempt.failed()
		srv.metrics.authFailures.WithLabelValues("bad_password").Inc()
		return "", auth.Claims{}, auth.ErrBadPassword
	}
	if err := auth.CheckPassword(u.PasswordHash, password); err != nil {
		attempt.failed()
		srv.metrics.authFailures.WithLabelValues("bad_password").Inc()
		return "", auth.Claims{}, auth.ErrBadPassword
	}
	attempt.succeeded()
	token, claims, err := srv.tokens.Issue(u.Name, u.Role, u.Groups, u.UpdatedAt)
	if err != nil {
		return "", auth.Claims{}, fmt.Errorf("hub: issue token: %w", err)
	}
	return token, claims, nil
}

// CheckToken verifies a token and that its user still exists and has not
// changed since it was issued.
//
// A token carries the version of the account it was issued for (claim
// gen, the account's UpdatedAt in ms): any other version refuses it, so a
// password, role or groups change revokes the tokens issued before it,
// even in the same second, and no clock is compared. A token without the
// claim (issued by a node from before it existed) is accepted only when it
// was issued in a later second than the account's last change: a token of
// the same second may predate the change, and is refused.
func (srv *Server) CheckToken(token string) (auth.Claims, error) {
	c, err := srv.tokens.Verify(token)
	if err != nil {
		return auth.Claims{}, err
	}
	u, ok := srv.users.get(c.User)
	if !ok {
		return auth.Claims{}, fmt.Errorf("%w: user no longer exists", auth.ErrTokenInvalid)
	}
	if c.HasGeneration {
		if c.Generation != u.UpdatedAt {
			return auth.Claims{}, fmt.Errorf("%w: account changed since the token was issued", auth.ErrTokenInvalid)
		}
		return c, nil
	}
	if c.IssuedAt.Unix() <= time.UnixMilli(u.UpdatedAt).Unix() {
		return auth.Claims{}, fmt.Errorf("%w: account changed since the token was issued", auth.ErrTokenInvalid)
	}
	return c, nil
}
