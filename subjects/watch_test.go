package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestWatch(t *testing.T) {
	tests := []struct {
		group, typ, sn, topic string
		want                  string
	}{
		{"g1", "dog", "R-1", WatchStatus, "hub.watch.g1.dog.R-1.status"},
		{"g1", "dog", "R-1", WatchEvent, "hub.watch.g1.dog.R-1.event"},
		{"g1", "dog", "R-1", WatchPresence, "hub.watch.g1.dog.R-1.presence"},
		{"", "dog", "R-1", WatchStatus, "hub.watch._.dog.R-1.status"},
		{"g1", "", "R-1", WatchStatus, "hub.watch.g1._.R-1.status"},
		{"", "", "R-1", WatchPresence, "hub.watch._._.R-1.presence"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			got, err := Watch(tc.group, tc.typ, tc.sn, tc.topic)
			if err != nil || got != tc.want {
				t.Fatalf("Watch = %q, %v; want %q", got, err, tc.want)
			}
			g, typ, sn, topic, err := ParseWatch(got)
			if err != nil || g != tc.group || typ != tc.typ || sn != tc.sn || topic != tc.topic {
				t.Fatalf("ParseWatch(%q) = %q %q %q %q, %v", got, g, typ, sn, topic, err)
			}
			if !IsWatch(got) {
				t.Fatalf("IsWatch(%q) = false", got)
			}
		})
	}
	patterns := []struct {
		fn   func() (string, error)
		want string
	}{
		{func() (string, error) { return WatchAll(WatchStatus) }, "hub.watch.*.*.*.status"},
		{func() (string, error) { return WatchGroup("g1", WatchEvent) }, "hub.watch.g1.*.*.event"},
		{func() (string, error) { return WatchType("dog", WatchPresence) }, "hub.watch.*.dog.*.presence"},
		{func() (string, error) { return WatchGroupType("sh-01", "dog", WatchEvent) }, "hub.watch.sh-01.dog.*.event"},
		{func() (string, error) { return WatchDeviceRecords("R-001") }, "hub.watch.*.*.R-001.*"},
		{func() (string, error) { return WatchDevice("R-1", WatchStatus) }, "hub.watch.*.*.R-1.status"},
	}
	for _, tc := range patterns {
		got, err := tc.fn()
		if err != nil || got != tc.want {
			t.Fatalf("pattern = %q, %v; want %q", got, err, tc.want)
		}
		if _, _, _, _, err := ParseWatch(got); !errors.Is(err, ErrNotWatch) {
			t.Fatalf("ParseWatch(%q) took a pattern: %v", got, err)
		}
	}
}

func TestWatchBad(t *testing.T) {
	for _, bad := range []string{"a.b", "*", ">", "a b", strings.Repeat("a", 257)} {
		if s, err := Watch(bad, "t", "R-1", WatchStatus); !errors.Is(err, ErrBadToken) {
			t.Errorf("group %q: %q, %v", bad, s, err)
		}
		if s, err := Watch("g", bad, "R-1", WatchStatus); !errors.Is(err, ErrBadToken) {
			t.Errorf("type %q: %q, %v", bad, s, err)
		}
		if s, err := WatchGroup(bad, WatchStatus); !errors.Is(err, ErrBadToken) {
			t.Errorf("WatchGroup %q: %q, %v", bad, s, err)
		}
		if s, err := WatchType(bad, WatchStatus); !errors.Is(err, ErrBadToken) {
			t.Errorf("WatchType %q: %q, %v", bad, s, err)
		}
	}
	for _, bad := range []string{"", "a.b", "*", ">", "a b"} {
		if s, err := Watch("g", "t", bad, WatchStatus); !errors.Is(err, ErrBadToken) {
			t.Errorf("sn %q: %q, %v", bad, s, err)
		}
		if s, err := WatchDevice(bad, WatchStatus); !errors.Is(err, ErrBadToken) {
			t.Errorf("WatchDevice %q: %q, %v", bad, s, err)
		}
	}
	for _, topic := range []string{"", "summary", "push", "*", ">", "status.x"} {
		if s, err := Watch("g", "t", "R-1", topic); !errors.Is(err, ErrBadToken) {
			t.Errorf("topic %q: %q, %v", topic, s, err)
		}
		if s, err := WatchAll(topic); !errors.Is(err, ErrBadToken) {
			t.Errorf("WatchAll topic %q: %q, %v", topic, s, err)
		}
	}
	for _, bad := range []string{"", "hub.watch.g.t.R-1", "hub.watch.g.t.R-1.summary", "hub.watch.g.t..status", "hub.watch.g.t.R-1.status.x",
		"hub.dev.R-1.status", "nats.watch.g.t.R-1.status", "hub.watch.g.>.R-1.status"} {
		if _, _, _, _, err := ParseWatch(bad); !errors.Is(err, ErrNotWatch) {
			t.Errorf("ParseWatch(%q) err = %v, want ErrNotWatch", bad, err)
		}
	}
}

// FuzzWatch: every subject Watch builds is literal and parses back to what
// built it (WatchNone read back as empty), each pattern matches exactly the
// subjects it names, and ParseWatch accepts only what Watch builds.
func FuzzWatch(f *testing.F) {
	for _, s := range []string{"g1", "", "_", "a.b", "*", ">", " ", "R-001", "hub.watch.g.t.R-1.status", "hub.watch._._.R-1.event"} {
		f.Add(s, s, s)
	}
	f.Add("g", "t", "R-1")
	f.Fuzz(func(t *testing.T, group, typ, sn string) {
		for _, topic := range []string{WatchStatus, WatchEvent, WatchPresence} {
			subj, err := Watch(group, typ, sn, topic)
			valid := (group == "" || ValidToken(group)) && (typ == "" || ValidToken(typ)) && ValidToken(sn)
			if (err == nil) != valid {
				t.Fatalf("Watch(%q, %q, %q): valid %v, err %v", group, typ, sn, valid, err)
			}
			if err != nil {
				continue
			}
			literal(t, subj, 6)
			g, ty, s, tp, err := ParseWatch(subj)
			wantG, wantT := group, typ
			if wantG == WatchNone {
				wantG = ""
			}
			if wantT == WatchNone {
				wantT = ""
			}
			if err != nil || g != wantG || ty != wantT || s != sn || tp != topic {
				t.Fatalf("ParseWatch(%q) = %q %q %q %q, %v", subj, g, ty, s, tp, err)
			}
			all, _ := WatchAll(topic)
			dev, _ := WatchDevice(sn, topic)
			for _, p := range []string{all, dev} {
				if !matches(p, subj) {
					t.Fatalf("pattern %q does not match %q", p, subj)
				}
			}
			if group != "" {
				if p, _ := WatchGroup(group, topic); !matches(p, subj) {
					t.Fatalf("pattern %q does not match %q", p, subj)
				}
			}
			if typ != "" {
				if p, _ := WatchType(typ, topic); !matches(p, subj) {
					t.Fatalf("pattern %q does not match %q", p, subj)
				}
			}
			if p, _ := WatchDeviceRecords(sn); !matches(p, subj) {
				t.Fatalf("pattern %q does not match %q", p, subj)
			}
			if group != "" && typ != "" {
				if p, _ := WatchGroupType(group, typ, topic); !matches(p, subj) {
					t.Fatalf("pattern %q does not match %q", p, subj)
				}
			}
		}
		// The three strings as a subject a publisher on the bus might use.
		for _, subj := range []string{group, typ, sn} {
			g, ty, s, tp, err := ParseWatch(subj)
			if err != nil {
				continue
			}
			back, err := Watch(g, ty, s, tp)
			if err != nil || back != subj {
				t.Fatalf("ParseWatch(%q) = %q %q %q %q, which builds %q, %v", subj, g, ty, s, tp, back, err)
			}
		}
	})
}

// matches is NATS subject matching for patterns with '*' only.
func matches(pattern, subj string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subj, ".")
	if len(p) != len(s) {
		return false
	}
	for i := range p {
		if p[i] != "*" && p[i] != s[i] {
			return false
		}
	}
	return true
}
