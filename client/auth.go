package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
)

// authenticate sends the connection's first message and returns the
// session the hub answers with. Devices sign afresh each time (new
// timestamp, new nonce: the hub refuses a nonce it has seen). Admins resume
// with the token of their last login while it is valid, and fall back to
// the password when the hub refuses it.
func (c *Client) authenticate(ctx context.Context, cn *conn) (Session, error) {
	switch {
	case c.cfg.Device != nil:
		return c.authOnce(ctx, cn, "/auth/device", c.deviceProof())
	case c.cfg.Token != "":
		return c.authOnce(ctx, cn, "/auth/token", map[string]string{"token": c.cfg.Token})
	}
	if token := c.resumeToken(); token != "" {
		s, err := c.authOnce(ctx, cn, "/auth/token", map[string]string{"token": token})
		var e *Error
		if !errors.As(err, &e) || e.Code != wire.CodeUnauthorized {
			return s, err
		}
		c.log.Info("token refused, logging in with the password", "msg", e.Msg)
		c.forgetToken()
	}
	s, err := c.authOnce(ctx, cn, "/auth/login", map[string]string{
		"username": c.cfg.Login.Username, "password": c.cfg.Login.Password,
	})
	if err == nil {
		c.mu.Lock()
		c.token, c.tokenExp = s.Token, s.ExpiresAt
		c.mu.Unlock()
	}
	return s, err
}

func (c *Client) authOnce(ctx context.Context, cn *conn, service string, args any) (Session, error) {
	raw, err := encodeArgs(args)
	if err != nil {
		return Session{}, err
	}
	r, err := cn.roundTrip(ctx, service, raw, c.cfg.RequestTimeout, nil)
	if err != nil {
		var e *Error
		if service == "/auth/device" && errors.As(err, &e) && e.Code == wire.CodeUnauthorized &&
			strings.Contains(e.Msg, "bad signature") && looksHex(c.cfg.Device.Key) {
			return Session{}, fmt.Errorf("client: %s at %s: %w (%s)", service, cn.url, err, hexKeyHint)
		}
		return Session{}, fmt.Errorf("client: %s at %s: %w", service, cn.url, err)
	}
	s, err := parseSession(r.Values)
	if err != nil {
		return Session{}, fmt.Errorf("client: %s at %s: unreadable answer: %w", service, cn.url, err)
	}
	return s, nil
}

// deviceProof signs /auth/device args for now, with a fresh nonce of 130
// random bits.
func (c *Client) deviceProof() map[string]any {
	d := c.cfg.Device
	ts := time.Now().Unix()
	nonce := rand.Text()
	args := map[string]any{"sn": d.SN, "ts": ts, "nonce": nonce, "sig": auth.Sign(d.Key, d.SN, ts, nonce)}
	if d.Type != "" {
		args["type"] = d.Type
	}
	return args
}

// resumeToken returns the token of the last login if it is still valid for
// a while, "" otherwise.
func (c *Client) resumeToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" || time.Until(c.tokenExp) < tokenMargin {
		return ""
	}
	return c.token
}

func (c *Client) forgetToken() {
	c.mu.Lock()
	c.token, c.tokenExp = "", time.Time{}
	c.mu.Unlock()
}
