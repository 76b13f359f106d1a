package client

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSubLogCompaction(t *testing.T) {
	const (
		x   = `{"devices":["x"]}`
		xs  = `{"devices":["x"],"topics":["status"]}`
		y   = `{"devices":["y"]}`
		xy  = `{"devices":["x","y"]}`
		all = `{"all":true}`
		odd = `{"devices":"x"}` // selectors unreadable: overlaps everything
	)
	type step struct {
		unsub bool
		args  string
	}
	sub := func(a string) step { return step{false, a} }
	unsub := func(a string) step { return step{true, a} }
	tests := []struct {
		name  string
		steps []step
		want  string // the replay: +args for subscribe, -args for unsubscribe
	}{
		{"kept in order", []step{sub(x), sub(y)}, "+" + x + " +" + y},
		{"cancelled", []step{sub(x), sub(y), unsub(x)}, "+" + y},
		{"all cancelled", []step{sub(x), unsub(x), sub(y), unsub(y)}, ""},
		{"unsubscribe of nothing", []step{sub(y), unsub(x)}, "+" + y},
		{"partial unsubscribe kept", []step{sub(x), unsub(xs)}, "+" + x + " -" + xs},
		{"overlap keeps both", []step{sub(x), sub(xs), unsub(x)}, "+" + x + " +" + xs + " -" + x},
		{"overlap by several selectors", []step{sub(xy), sub(x), unsub(x)}, "+" + xy + " +" + x + " -" + x},
		{"repeat is a no-op", []step{sub(x), sub(x)}, "+" + x},
		{"repeat after a change is kept", []step{sub(x), sub(xs), sub(x)}, "+" + x + " +" + xs + " +" + x},
		{"all is a selector", []step{sub(all), sub(x), unsub(all)}, "+" + x},
		{"unknown overlaps", []step{sub(odd), sub(x), unsub(x)}, "+" + odd + " +" + x + " -" + x},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l subLog
			for _, s := range tc.steps {
				raw, err := canonical(json.RawMessage(s.args))
				if err != nil {
					t.Fatal(err)
				}
				l.add(newSubOp(raw, s.unsub))
			}
			var got []string
			for _, op := range l.list() {
				sign := "+"
				if op.unsubscribe {
					sign = "-"
				}
				got = append(got, sign+string(op.args))
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Fatalf("replay\n got %s\nwant %s", g, tc.want)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	a, err := canonical(map[string]any{"topics": []string{"status"}, "devices": []string{"x"}, "n": 12345678901234567})
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != `{"devices":["x"],"n":12345678901234567,"topics":["status"]}` {
		t.Fatalf("got %s", a)
	}
	if _, err := canonical([]string{"x"}); err == nil {
		t.Fatal("an array was accepted as args")
	}
}
