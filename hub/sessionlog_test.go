package hub

import (
	"testing"

	"github.com/fleethub/fleethub/auth"
)

func TestSessionLogTallies(t *testing.T) {
	var l sessionLog
	for range 3 {
		l.start(auth.RoleDevice)
	}
	l.start(auth.RoleAdmin)
	l.end(ReasonClosed)
	l.end(ReasonReplaced)
	l.end(ReasonClosed)
	started, ended := l.take()
	if s, n := tally(started); s != "admin=1 device=3" || n != 4 {
		t.Fatalf("started %q (%d), want admin=1 device=3 (4)", s, n)
	}
	if s, n := tally(ended); s != "closed=2 replaced=1" || n != 3 {
		t.Fatalf("ended %q (%d), want closed=2 replaced=1 (3)", s, n)
	}
	if s, e := l.take(); len(s) != 0 || len(e) != 0 {
		t.Fatalf("a second take has %v %v, want nothing", s, e)
	}
}
