package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/fleethub/fleethub/auth"
)

// Login checks a username and password and issues a token. Concurrent
// bcrypt work is bounded so that a login flood cannot take every core.
func (srv *Server) Login(ctx context.Context, username, password string) (string, auth.Claims, error) {
	select {
	case srv.bcrypt <- struct{}{}:
		defer func() { <-srv.bcrypt }()
	case <-ctx.Done():
		return "", auth.Claims{}, ctx.Err()
	}
	u, ok := srv.users.get(username)
	if !ok {
		// Compare against a hash of the configured cost anyway, so that a
		// wrong username costs the same time as a wrong password.
		_ = auth.CheckPassword(srv.dummyHash, password)
		srv.metrics.authFailures.WithLabelValues("bad_password").Inc()
		return "", auth.Claims{}, auth.ErrBadPassword
	}
	if err := auth.CheckPassword(u.PasswordHash, password); err != nil {
		srv.metrics.authFailures.WithLabelValues("bad_password").Inc()
		return "", auth.Claims{}, auth.ErrBadPassword
	}
	token, claims, err := srv.tokens.Issue(u.Name, u.Role, u.Groups)
	if err != nil {
		return "", auth.Claims{}, fmt.Errorf("hub: issue token: %w", err)
	}
	return token, claims, nil
}

// CheckToken verifies a token and that its user still exists and has not
// changed since it was issued.
func (srv *Server) CheckToken(token string) (auth.Claims, error) {
	c, err := srv.tokens.Verify(token)
	if err != nil {
		return auth.Claims{}, err
	}
	u, ok := srv.users.get(c.User)
	if !ok {
		return auth.Claims{}, fmt.Errorf("%w: user no longer exists", auth.ErrTokenInvalid)
	}
	// Tokens carry whole seconds; the account change time is in ms.
	if c.IssuedAt.Before(time.UnixMilli(u.UpdatedAt).Truncate(time.Second)) {
		return auth.Claims{}, fmt.Errorf("%w: account changed since the token was issued", auth.ErrTokenInvalid)
	}
	return c, nil
}
