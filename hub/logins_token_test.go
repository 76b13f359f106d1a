package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/golang-jwt/jwt/v5"
)

// pinnedClock is a clock that stands still at a time the test moves.
type pinnedClock struct{ ns atomic.Int64 }

func (c *pinnedClock) now() time.Time                { return time.Unix(0, c.ns.Load()) }
func (c *pinnedClock) set(t time.Time)               { c.ns.Store(t.UnixNano()) }
func (c *pinnedClock) add(d time.Duration) time.Time { return time.Unix(0, c.ns.Add(int64(d))) }

// changePassword stores a new password for user with UpdatedAt at, as
// hubctl user passwd does, and waits for the node to have it.
func changePassword(t *testing.T, srv *Server, user, password string, at time.Time) {
	t.Helper()
	u, ok := srv.users.get(user)
	if !ok {
		t.Fatalf("no user %s", user)
	}
	hash, err := auth.HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	u.PasswordHash, u.UpdatedAt = hash, at.UnixMilli()
	b, _ := json.Marshal(u)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := srv.users.kv.Put(ctx, user, b); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if got, _ := srv.users.get(user); got.UpdatedAt != u.UpdatedAt {
			return fmt.Errorf("node has UpdatedAt %d, want %d", got.UpdatedAt, u.UpdatedAt)
		}
		return nil
	})
}

// legacyToken signs a token as nodes did before the gen claim: no gen.
func legacyToken(t *testing.T, srv *Server, user string, iat time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "iss": auth.DefaultIssuer, "role": "admin", "groups": []string{"*"},
		"iat": iat.Unix(), "exp": iat.Add(time.Hour).Unix(), "jti": "legacy",
	}).SignedString(auth.TokenKey(srv.cfg.MasterSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTokenRevokedInTheSameSecond: a password change revokes the tokens
// issued before it, even in the same second; a login after the change,
// still in that second, gets a token that holds. A token without the gen
// claim holds only when issued in a later second than the change.
func TestTokenRevokedInTheSameSecond(t *testing.T) {
	t.Parallel()
	clk := &pinnedClock{}
	t0 := time.Now().Truncate(time.Second).Add(100 * time.Millisecond)
	clk.set(t0)
	srv := startTestServer(t, natstest.Connect(t, natstest.Run(t)), Config{Now: clk.now})
	ctx := context.Background()

	before, _, err := srv.Login(ctx, "127.0.0.1:1", "admin", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CheckToken(before); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}
	legacyBefore := legacyToken(t, srv, "admin", t0)

	// The password changes 400 ms later, in the same second.
	changePassword(t, srv, "admin", "pw2", t0.Add(400*time.Millisecond))
	clk.set(t0.Add(500 * time.Millisecond))
	if _, err := srv.CheckToken(before); !errors.Is(err, auth.ErrTokenInvalid) {
		t.Fatalf("token issued before the change, in its second: %v, want refused", err)
	}
	if _, err := srv.CheckToken(legacyBefore); !errors.Is(err, auth.ErrTokenInvalid) {
		t.Fatalf("token without gen, issued in the second of the change: %v, want refused", err)
	}
	after, _, err := srv.Login(ctx, "127.0.0.1:1", "admin", "pw2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CheckToken(after); err != nil {
		t.Fatalf("token issued after the change, in its second: %v", err)
	}
	// A token without gen, issued in the second of the change, is refused;
	// one issued in a later second holds.
	if _, err := srv.CheckToken(legacyToken(t, srv, "admin", t0.Add(500*time.Millisecond))); !errors.Is(err, auth.ErrTokenInvalid) {
		t.Fatalf("token without gen from the second of the change: %v, want refused", err)
	}
	clk.add(time.Second)
	if _, err := srv.CheckToken(legacyToken(t, srv, "admin", clk.now())); err != nil {
		t.Fatalf("token without gen from a later second: %v", err)
	}
	// The next change revokes the token of the second login too.
	changePassword(t, srv, "admin", "pw3", clk.now().Add(time.Millisecond))
	if _, err := srv.CheckToken(after); !errors.Is(err, auth.ErrTokenInvalid) {
		t.Fatalf("token of the previous version: %v, want refused", err)
	}
}

// TestTokenLongerThanTTLRefused: a node refuses a token minted, with the
// master secret, for a longer lifetime than its TokenTTL.
func TestTokenLongerThanTTLRefused(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t, natstest.Connect(t, natstest.Run(t)), Config{TokenTTL: time.Hour})
	u, _ := srv.users.get("admin")
	long, err := auth.NewTokens(auth.TokenConfig{Key: auth.TokenKey(srv.cfg.MasterSecret), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := long.Issue("admin", auth.RoleAdmin, []string{"*"}, u.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CheckToken(tok); !errors.Is(err, auth.ErrTokenInvalid) {
		t.Fatalf("48 h token on a node with a 1 h TTL: %v, want refused", err)
	}
	ok, _, err := srv.Login(context.Background(), "127.0.0.1:1", "admin", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CheckToken(ok); err != nil {
		t.Fatalf("the node's own token: %v", err)
	}
}
