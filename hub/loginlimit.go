package hub

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fleethub/fleethub/auth"
)

// Login throttling. Password guessing is slowed at three levels, all
// decided before any bcrypt work is spent on an attempt:
//
//   - Per client address (IPv4, or the /64 of an IPv6 address): a few
//     failures are free, then each failure blocks the address for a
//     back-off that doubles (1 s, 2 s, 4 s, ... up to 5 min). An address
//     also has at most one password check in flight (a few more wait for
//     their turn, the rest are refused): the hub has only two bcrypt
//     slots, and one address must not be able to hold them all.
//   - Per username: failures for a user are counted from every address.
//     Once a user has had more than a few recent failures, it is under
//     attack, and every address that then fails for it is blocked for that
//     user from its first failure on (the same doubling back-off, per
//     username and address pair). An address that has not failed for the
//     user (the real user at their desk) is not affected: a per-username
//     limit must not let an attacker lock the real user out.
//   - A success resets the counters of its address and of its username and
//     address pair. The username's own count is left to decay, so that an
//     attacker's own account cannot wash out the count of another.
//
// Counters are forgotten after loginForget without a failure. The tables
// are bounded (loginTableCap entries each, least recently used evicted
// first) and swept of forgotten entries every minute by a task the server
// owns, so a flood of addresses or usernames costs bounded memory.
const (
	loginIPFree      = 5                // failures an address makes before its back-off starts
	loginUserFree    = 5                // failures a username takes before back-off applies to the addresses failing for it
	loginBackoffBase = time.Second      // the first back-off
	loginBackoffMax  = 5 * time.Minute  // the longest
	loginForget      = 15 * time.Minute // a counter with no failure for this long is forgotten
	loginMaxInflight = 1                // password checks in flight per address
	loginMaxWaiting  = 16               // attempts of one address waiting for their turn
	loginTableCap    = 10000            // entries per table (addresses, usernames, pairs)
	loginSweepEvery  = time.Minute
)

// ErrThrottled is matched (errors.Is) by the error Login returns for an
// attempt refused before its password was checked; the error is a
// *ThrottledError saying when to try again.
var ErrThrottled = errors.New("hub: too many failed logins")

// ThrottledError is a login refused by throttling.
type ThrottledError struct {
	// RetryAfter is how long the caller should wait before trying again.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("hub: too many failed logins: try again in %d s", RetryAfterSeconds(e.RetryAfter))
}

// Is makes errors.Is(err, ErrThrottled) hold.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// RetryAfterSeconds rounds a wait up to whole seconds, at least 1, as an
// HTTP Retry-After header wants it.
func RetryAfterSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// loginLimiter keeps the login failure counters. It is safe for
// concurrent use; its lock is taken alone, and an attempt waits for its
// address's turn with it released.
type loginLimiter struct {
	now func() time.Time
	// Policy, set at construction (tests shorten it).
	ipFree, userFree int
	base, maxBackoff time.Duration
	forget           time.Duration
	maxInflight      int
	maxWaiting       int

	mu    sync.Mutex
	ips   lruTable[ipCount]   // Guarded by mu.
	users lruTable[failCount] // Guarded by mu.
	pairs lruTable[failCount] // username + "\x00" + address. Guarded by mu.
}

// failCount is the failures of one key.
type failCount struct {
	fails   int
	last    time.Time // of the last failure
	blocked time.Time // refused until then
}

// ipCount is an address's failures and its turns: turn holds a token per
// check in flight (made at the first attempt), waiting counts the attempts
// waiting for one.
type ipCount struct {
	failCount
	turn    chan struct{}
	waiting int
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	l := &loginLimiter{
		now: now, ipFree: loginIPFree, userFree: loginUserFree,
		base: loginBackoffBase, maxBackoff: loginBackoffMax, forget: loginForget,
		maxInflight: loginMaxInflight, maxWaiting: loginMaxWaiting,
	}
	l.ips.init(loginTableCap, now)
	l.users.init(loginTableCap, now)
	l.pairs.init(loginTableCap, now)
	return l
}

// loginAttempt is a login let through to the password check. Exactly one
// of failed, succeeded or abandoned ends it.
type loginAttempt struct {
	l *loginLimiter
	// ip is held, not looked up again: it may be evicted meanwhile (only
	// when the table is full), and then the new entry of the address
	// starts with no check in flight and its own turn.
	ip         *ipCount
	turn       chan struct{} // the address's turn, held until the attempt ends
	addr, user string        // user is empty when the username cannot exist
}

// clientAddr is the key of a remote address ("host:port" or a bare host):
// the IP, or for IPv6 its /64, since one host usually holds a whole /64.
// What does not parse is used as it is.
func clientAddr(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// begin decides whether an attempt from remote for username may have its
// password checked, and waits for the address's turn: an address has at
// most maxInflight checks running, and at most maxWaiting more waiting
// (several people behind one NAT may log in at once; a flood from one
// address is refused past that). It refuses with a *ThrottledError when
// the address, or the username and address pair, is backing off (checked
// again once the turn comes), or when too many attempts of the address
// wait already; with ctx's error when ctx ends first.
func (l *loginLimiter) begin(ctx context.Context, remote, username string) (*loginAttempt, error) {
	addr := clientAddr(remote)
	user := ""
	if auth.ValidUsername(username) {
		user = username // an invalid name has no account: nothing to protect
	}
	l.mu.Lock()
	ip := l.ips.get(addr, true)
	if err := l.refusal(ip, user, addr); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	if ip.waiting >= l.maxWaiting {
		l.mu.Unlock()
		return nil, &ThrottledError{RetryAfter: time.Second}
	}
	if ip.turn == nil {
		ip.turn = make(chan struct{}, l.maxInflight)
	}
	turn := ip.turn
	ip.waiting++
	l.mu.Unlock()

	select {
	case turn <- struct{}{}:
	case <-ctx.Done():
		l.mu.Lock()
		ip.waiting--
		l.mu.Unlock()
		return nil, ctx.Err()
	}
	l.mu.Lock()
	ip.waiting--
	// The attempts ahead in the queue may have made the address, or the
	// pair, back off meanwhile.
	err := l.refusal(ip, user, addr)
	l.mu.Unlock()
	if err != nil {
		<-turn
		return nil, err
	}
	return &loginAttempt{l: l, ip: ip, turn: turn, addr: addr, user: user}, nil
}

// refusal is the throttling error for an attempt now, or nil.
// Called with mu held.
func (l *loginLimiter) refusal(ip *ipCount, user, addr string) error {
	now := l.now()
	l.decay(&ip.failCount, now)
	if wait := ip.blocked.Sub(now); wait > 0 {
		return &ThrottledError{RetryAfter: wait}
	}
	if user != "" {
		if p := l.pairs.get(userAddrKey(user, addr), false); p != nil {
			if wait := p.blocked.Sub(now); wait > 0 {
				return &ThrottledError{RetryAfter: wait}
			}
		}
	}
	return nil
}

func userAddrKey(user, addr string) string { return user + "\x00" + addr }

// decay forgets a count whose last failure is older than forget.
func (l *loginLimiter) decay(c *failCount, now time.Time) {
	if c.fails > 0 && now.Sub(c.last) > l.forget {
		*c = failCount{}
	}
}

// backoff is the block after the n-th failure past the free ones (n >= 1).
func (l *loginLimiter) backoff(n int) time.Duration {
	if n > 30 {
		return l.maxBackoff
	}
	return min(l.base<<(n-1), l.maxBackoff)
}

// failed records a wrong password.
func (a *loginAttempt) failed() {
	l := a.l
	now := l.now()
	defer func() { <-a.turn }() // after the unlock: no channel under mu
	l.mu.Lock()
	defer l.mu.Unlock()
	l.decay(&a.ip.failCount, now)
	a.ip.fails++
	a.ip.last = now
	if n := a.ip.fails - l.ipFree; n > 0 {
		a.ip.blocked = now.Add(l.backoff(n))
	}
	if a.user == "" {
		return
	}
	u := l.users.get(a.user, true)
	l.decay(u, now)
	u.fails++
	u.last = now
	p := l.pairs.get(userAddrKey(a.user, a.addr), true)
	l.decay(p, now)
	p.fails++
	p.last = now
	if u.fails > l.userFree {
		// The user is under attack: this address backs off for it from
		// its first failure, doubling with each of its own.
		p.blocked = now.Add(l.backoff(p.fails))
	}
}

// succeeded records a right password: the address and the pair start
// again from zero.
func (a *loginAttempt) succeeded() {
	l := a.l
	defer func() { <-a.turn }() // after the unlock: no channel under mu
	l.mu.Lock()
	defer l.mu.Unlock()
	a.ip.failCount = failCount{}
	if a.user != "" {
		l.pairs.remove(userAddrKey(a.user, a.addr))
	}
}

// abandoned ends an attempt whose password was not checked (the caller
// gave up waiting for a bcrypt slot): nothing is counted.
func (a *loginAttempt) abandoned() {
	<-a.turn
}

// run sweeps forgotten entries until ctx ends.
func (l *loginLimiter) run(ctx context.Context) {
	t := time.NewTicker(loginSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.sweep()
		}
	}
}

// sweep drops the entries not touched for longer than forget: their
// counts would be forgotten anyway. Entries are kept in the order they
// were last touched, so it stops at the first one still fresh.
func (l *loginLimiter) sweep() {
	cutoff := l.now().Add(-l.forget)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ips.dropOlder(cutoff)
	l.users.dropOlder(cutoff)
	l.pairs.dropOlder(cutoff)
}

// lens reports the table sizes, for tests.
func (l *loginLimiter) lens() (ips, users, pairs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ips.len(), l.users.len(), l.pairs.len()
}

// lruTable is a map bounded to cap entries, evicting the least recently
// touched. Not safe for concurrent use: loginLimiter guards it.
type lruTable[V any] struct {
	cap   int
	now   func() time.Time
	items map[string]*list.Element
	order list.List // of *lruItem[V], most recently touched first
}

type lruItem[V any] struct {
	key     string
	touched time.Time
	v       V
}

func (t *lruTable[V]) init(capacity int, now func() time.Time) {
	t.cap, t.now = capacity, now
	t.items = make(map[string]*list.Element)
}

// get returns key's value, marking it touched, or when create is set a new
// zero one (evicting the least recently touched entry when full); nil when
// absent and create is not set.
func (t *lruTable[V]) get(key string, create bool) *V {
	if e, ok := t.items[key]; ok {
		t.order.MoveToFront(e)
		it := e.Value.(*lruItem[V])
		it.touched = t.now()
		return &it.v
	}
	if !create {
		return nil
	}
	if len(t.items) >= t.cap {
		if back := t.order.Back(); back != nil {
			delete(t.items, back.Value.(*lruItem[V]).key)
			t.order.Remove(back)
		}
	}
	it := &lruItem[V]{key: key, touched: t.now()}
	t.items[key] = t.order.PushFront(it)
	return &it.v
}

func (t *lruTable[V]) remove(key string) {
	if e, ok := t.items[key]; ok {
		delete(t.items, key)
		t.order.Remove(e)
	}
}

// dropOlder removes the entries last touched before cutoff.
func (t *lruTable[V]) dropOlder(cutoff time.Time) {
	for e := t.order.Back(); e != nil; e = t.order.Back() {
		it := e.Value.(*lruItem[V])
		if !it.touched.Before(cutoff) {
			return
		}
		delete(t.items, it.key)
		t.order.Remove(e)
	}
}

func (t *lruTable[V]) len() int { return len(t.items) }
