package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/fleethub/fleethub/hub/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is a settable clock for the limiter's unit tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// try runs one attempt through l: it reports nil when the attempt was let
// through (and then records it as failed, or succeeded when ok), else the
// refusal.
func try(t *testing.T, l *loginLimiter, remote, user string, ok bool) error {
	t.Helper()
	a, err := l.begin(context.Background(), remote, user)
	if err != nil {
		return err
	}
	if ok {
		a.succeeded()
	} else {
		a.failed()
	}
	return nil
}

func retryAfter(t *testing.T, err error) time.Duration {
	t.Helper()
	var te *ThrottledError
	if !errors.As(err, &te) || !errors.Is(err, ErrThrottled) {
		t.Fatalf("got %v, want a throttled error", err)
	}
	return te.RetryAfter
}

// TestLoginLimiterAddressBackoff: an address makes its free failures,
// then backs off for 1 s, 2 s, 4 s ...; the block ends on time; a success
// starts it again from zero; old failures are forgotten.
func TestLoginLimiterAddressBackoff(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	l := newLoginLimiter(clk.now)
	for i := range loginIPFree {
		// Different users, so that only the address's count matters.
		if err := try(t, l, "192.0.2.1:5000", fmt.Sprintf("u%d", i), false); err != nil {
			t.Fatalf("free failure %d refused: %v", i+1, err)
		}
	}
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if err := try(t, l, "192.0.2.1:5001", fmt.Sprintf("v%d", n), false); err != nil {
			t.Fatalf("failure past the free ones refused before it was blocked: %v", err)
		}
		if got := retryAfter(t, try(t, l, "192.0.2.1:5002", "someone", true)); got != want {
			t.Fatalf("back-off %d: retry after %v, want %v", n+1, got, want)
		}
		clk.add(want - time.Millisecond)
		retryAfter(t, try(t, l, "192.0.2.1:5003", "someone", true))
		clk.add(time.Millisecond)
	}
	// Another address is not affected; nor is an IPv6 /64 by another one.
	if err := try(t, l, "192.0.2.2:5000", "someone", false); err != nil {
		t.Fatalf("another address refused: %v", err)
	}
	// A success resets the address.
	if err := try(t, l, "192.0.2.1:5004", "someone", true); err != nil {
		t.Fatal(err)
	}
	for i := range loginIPFree {
		if err := try(t, l, "192.0.2.1:5005", fmt.Sprintf("w%d", i), false); err != nil {
			t.Fatalf("free failure %d after a success refused: %v", i+1, err)
		}
	}
	// Failures older than loginForget are forgotten.
	clk.add(loginForget + time.Second)
	for i := range loginIPFree {
		if err := try(t, l, "192.0.2.1:5006", fmt.Sprintf("x%d", i), false); err != nil {
			t.Fatalf("free failure %d after the forget time refused: %v", i+1, err)
		}
	}
	// The back-off is capped.
	for range 40 {
		clk.add(loginBackoffMax)
		_ = try(t, l, "192.0.2.1:5007", "y", false)
	}
	if got := retryAfter(t, try(t, l, "192.0.2.1:5008", "y", true)); got > loginBackoffMax {
		t.Fatalf("retry after %v, more than the cap %v", got, loginBackoffMax)
	}
}

// TestLoginLimiterUserUnderAttack: many addresses failing for one user,
// each below its own free failures, put the user under attack: from then
// on an address backs off for that user from its first failure. An
// address that has not failed for the user (the real user) logs in.
func TestLoginLimiterUserUnderAttack(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	l := newLoginLimiter(clk.now)
	attacker := func(i int) string { return fmt.Sprintf("198.51.100.%d:4000", i) }
	for i := range loginUserFree {
		if err := try(t, l, attacker(i), "admin", false); err != nil {
			t.Fatalf("failure %d refused: %v", i+1, err)
		}
	}
	// The user is over its free failures: each new address gets one
	// guess, then backs off for admin.
	for i := loginUserFree; i < loginUserFree+20; i++ {
		if err := try(t, l, attacker(i), "admin", false); err != nil {
			t.Fatalf("first guess of address %d refused: %v", i, err)
		}
		if got := retryAfter(t, try(t, l, attacker(i), "admin", false)); got != time.Second {
			t.Fatalf("address %d: retry after %v, want 1s", i, got)
		}
		// The address is blocked for admin only.
		if err := try(t, l, attacker(i), "other", false); err != nil {
			t.Fatalf("address %d refused for another user: %v", i, err)
		}
	}
	// The pair's back-off doubles with its own failures.
	clk.add(time.Second)
	if err := try(t, l, attacker(loginUserFree), "admin", false); err != nil {
		t.Fatal(err)
	}
	if got := retryAfter(t, try(t, l, attacker(loginUserFree), "admin", false)); got != 2*time.Second {
		t.Fatalf("second back-off %v, want 2s", got)
	}
	// The real admin, from an address that never failed for admin, logs
	// in, even with one typo first.
	if err := try(t, l, "203.0.113.7:443", "admin", false); err != nil {
		t.Fatalf("the real admin's first attempt refused: %v", err)
	}
	clk.add(time.Second)
	if err := try(t, l, "203.0.113.7:443", "admin", true); err != nil {
		t.Fatalf("the real admin refused: %v", err)
	}
	// The success reset the pair: the next typo costs 1 s again, not 2.
	if err := try(t, l, "203.0.113.7:443", "admin", false); err != nil {
		t.Fatal(err)
	}
	if got := retryAfter(t, try(t, l, "203.0.113.7:443", "admin", false)); got != time.Second {
		t.Fatalf("back-off after a success %v, want 1s", got)
	}
}

// TestLoginLimiterTurns: an address has one check in flight; a few more
// wait for their turn (and are let through one by one), the rest are
// refused at once; a waiter whose context ends gives up its place.
func TestLoginLimiterTurns(t *testing.T) {
	t.Parallel()
	l := newLoginLimiter(time.Now)
	first, err := l.begin(context.Background(), "192.0.2.9:1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *loginAttempt, loginMaxWaiting)
	var wg sync.WaitGroup
	for range loginMaxWaiting {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := l.begin(context.Background(), "192.0.2.9:2", "alice")
			if err != nil {
				t.Errorf("waiter refused: %v", err)
				return
			}
			got <- a
		}()
	}
	waitFor(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.ips.get("192.0.2.9", false).waiting == loginMaxWaiting
	})
	retryAfter(t, func() error { _, err := l.begin(context.Background(), "192.0.2.9:3", "alice"); return err }())
	// Another address goes ahead at once.
	other, err := l.begin(context.Background(), "192.0.2.10:1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	other.succeeded()
	// The waiters go one at a time.
	first.succeeded()
	for range loginMaxWaiting {
		a := <-got
		select {
		case b := <-got:
			t.Fatalf("two attempts of one address in flight: %v %v", a, b)
		default:
		}
		a.succeeded()
	}
	wg.Wait()
	// A waiter whose context ends leaves.
	held, _ := l.begin(context.Background(), "192.0.2.9:4", "alice")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.begin(ctx, "192.0.2.9:5", "alice"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	held.abandoned()
	if _, err := l.begin(context.Background(), "192.0.2.9:6", "alice"); err != nil {
		t.Fatalf("after the waiter left: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLoginLimiterBounded: a flood of addresses and usernames keeps each
// table within its cap, and the sweep empties them once forgotten.
func TestLoginLimiterBounded(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	l := newLoginLimiter(clk.now)
	for i := range loginTableCap + 500 {
		_ = try(t, l, fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), fmt.Sprintf("user%d", i), false)
	}
	// IPv6 addresses of one /64 are one address.
	for i := range 100 {
		_ = try(t, l, fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), "v6", false)
	}
	retryAfter(t, try(t, l, "[2001:db8:1:2:ffff::1]:1", "v6x", false))
	if ips, users, pairs := l.lens(); ips > loginTableCap || users > loginTableCap || pairs > loginTableCap {
		t.Fatalf("tables hold %d addresses, %d users, %d pairs; the cap is %d", ips, users, pairs, loginTableCap)
	}
	clk.add(loginForget + time.Second)
	l.sweep()
	if ips, users, pairs := l.lens(); ips+users+pairs != 0 {
		t.Fatalf("after the sweep: %d addresses, %d users, %d pairs", ips, users, pairs)
	}
}

// TestLoginFloodThrottled: 200 concurrent wrong-password attempts from one
// address (127.0.0.2) go on for two seconds. The attacker's guesses
// actually checked stay far below 40 a second, the refusals are counted as
// throttled, and meanwhile the real admin, from 127.0.0.1, logs in
// promptly each time it tries.
func TestLoginFloodThrottled(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	throttled := srv.metrics.authFailures.WithLabelValues("throttled")
	if v := testutil.ToFloat64(throttled); v != 0 {
		t.Fatalf("throttled starts at %v", v)
	}
	const (
		attackers = 200
		flood     = 2 * time.Second
	)
	var checked, refused atomic.Int64
	start := time.Now()
	stop := start.Add(flood)
	var wg sync.WaitGroup
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, _, err := srv.Login(ctx, fmt.Sprintf("127.0.0.2:%d", 20000+i), "admin", "guess")
				cancel()
				switch {
				case errors.Is(err, auth.ErrBadPassword):
					checked.Add(1)
				case errors.Is(err, ErrThrottled):
					refused.Add(1)
				case err != nil && !errors.Is(err, context.DeadlineExceeded):
					t.Errorf("attacker: %v", err)
				}
				<-tick.C
			}
		}()
	}
	// The real admin logs in during the flood, several times.
	var slowest time.Duration
	for time.Now().Add(300 * time.Millisecond).Before(stop) {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, c, err := srv.Login(ctx, "127.0.0.1:40000", "admin", "pw")
		cancel()
		if err != nil || c.User != "admin" {
			t.Fatalf("the real admin's login during the flood: %v", err)
		}
		slowest = max(slowest, time.Since(t0))
		time.Sleep(200 * time.Millisecond) // a person, not a loop
	}
	wg.Wait()
	elapsed := time.Since(start)
	rate := float64(checked.Load()) / elapsed.Seconds()
	t.Logf("attacker: %d guesses checked, %d refused in %v (%.1f checked/s); slowest admin login %v",
		checked.Load(), refused.Load(), elapsed.Round(time.Millisecond), rate, slowest)
	if rate >= 10 {
		t.Fatalf("attacker's guesses checked: %.1f a second, want far below 40", rate)
	}
	if slowest > time.Second {
		t.Fatalf("the real admin's slowest login took %v during the flood", slowest)
	}
	if v := testutil.ToFloat64(throttled); v < float64(refused.Load()) || v == 0 {
		t.Fatalf("throttled counted %v, refused %d", v, refused.Load())
	}
}

// TestLoginThrottledOnWebSocket: /auth/login past the back-off answers
// 429 with a msg saying when to try again, and the session stays open.
func TestLoginThrottledOnWebSocket(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	for i := range loginIPFree + 1 {
		s, ft := openFrom(srv, "192.0.2.77:1234")
		s.HandleFrame(loginFrame(t, fmt.Sprintf("user%d", i), "nope"))
		if code, _ := ft.answerCode(); code != wire.CodeUnauthorized {
			t.Fatalf("attempt %d: answer %d, want 401", i+1, code)
		}
	}
	s, ft := openFrom(srv, "192.0.2.77:1235")
	s.HandleFrame(loginFrame(t, "admin", "pw"))
	code, _ := ft.answerCode()
	if code != wire.CodeRateLimited {
		t.Fatalf("answer %d, want 429", code)
	}
	if msg := ft.answerMsg(); msg != "too many failed logins: try again in 1 s" {
		t.Fatalf("msg %q", msg)
	}
	if c := ft.closeCode(); c != 0 {
		t.Fatalf("throttled session closed with %d", c)
	}
	// Another address logs in.
	s2, ft2 := openFrom(srv, "192.0.2.78:1234")
	s2.HandleFrame(loginFrame(t, "admin", "pw"))
	if code, _ := ft2.answerCode(); code != 0 || s2.Identity() == nil {
		t.Fatalf("login from another address: %d", code)
	}
}
