package subjects

import (
	"strings"
	"testing"
)

// FuzzRoundTrip checks that every subject a builder accepts parses back to
// the same target, and that no accepted token widens a subscription.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"R-001", "a.b", "*", ">", " ", "", "ü", "hub", "a/b", "\x7f", "a\x00", strings.Repeat("x", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		for _, kind := range []Kind{KindDevice, KindUser, KindRole, KindType, KindGroup} {
			target := Target{Kind: kind, Value: tok}
			subj, err := target.Subject()
			if err != nil {
				if ValidToken(tok) {
					t.Fatalf("valid token %q refused: %v", tok, err)
				}
				continue
			}
			literal(t, subj, 4)
			back, err := ParsePush(subj)
			if err != nil || back != target {
				t.Fatalf("round trip %q: %v, %v", subj, back, err)
			}
			if again, err := ParseTarget(target.String()); err != nil || again != target {
				t.Fatalf("ParseTarget(%q) = %v, %v", target.String(), again, err)
			}
		}
		for _, build := range []func(string) (string, error){DeviceStatus, DeviceEvent, DeviceCmd, Presence} {
			subj, err := build(tok)
			if (err == nil) != ValidToken(tok) {
				t.Fatalf("token %q: valid %v, builder error %v", tok, ValidToken(tok), err)
			}
			if err == nil {
				literal(t, subj, strings.Count(subj, ".")+1)
			}
		}
		if subj, err := DeviceCmd(tok); err == nil {
			if sn, ok := ParseDeviceCmd(subj); !ok || sn != tok {
				t.Fatalf("ParseDeviceCmd(%q) = %q, %v", subj, sn, ok)
			}
		}
		if subj, err := Service("/" + tok); err == nil {
			literal(t, subj, strings.Count(subj, ".")+1)
			if p, err := ServicePath(subj); err != nil || p != "/"+tok {
				t.Fatalf("service round trip %q: %q, %v", tok, p, err)
			}
		}
	})
}

// FuzzParse: each parser takes any subject a publisher on the bus might
// use, and accepts only what its builder would have built, exactly.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"hub.dev.R-1.push", "hub.dev.R-1.cmd", "hub.user.alice.push", "hub.role.admin.push", "hub.type.t.push",
		"hub.group.g.push", "hub.all.push", "hub.svc.a.b", "hub.svc.", "hub.svc..a", "hub.dev.*.push",
		"hub.dev.>.cmd", "hub.dev. .cmd", "hub.foo.x.push", "sn:R-1", "all", "user:a.b", "hub.svc.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subj string) {
		if target, err := ParsePush(subj); err == nil {
			if back, err := target.Subject(); err != nil || back != subj {
				t.Fatalf("ParsePush(%q) = %v, which builds %q, %v", subj, target, back, err)
			}
		}
		if sn, ok := ParseDeviceCmd(subj); ok {
			if back, err := DeviceCmd(sn); err != nil || back != subj {
				t.Fatalf("ParseDeviceCmd(%q) = %q, which builds %q, %v", subj, sn, back, err)
			}
		}
		if p, err := ServicePath(subj); err == nil {
			if !ValidPath(p) {
				t.Fatalf("ServicePath(%q) = %q, not a valid path", subj, p)
			}
			if back, err := Service(p); err != nil || back != subj {
				t.Fatalf("ServicePath(%q) = %q, which builds %q, %v", subj, p, back, err)
			}
		}
		// The same string as hubctl's --to takes it.
		if target, err := ParseTarget(subj); err == nil {
			if target.String() != subj {
				t.Fatalf("ParseTarget(%q) = %v, written %q", subj, target, target.String())
			}
			s, err := target.Subject()
			if err != nil {
				t.Fatalf("ParseTarget(%q) = %v, which has no subject: %v", subj, target, err)
			}
			literal(t, s, strings.Count(s, ".")+1)
			if back, err := ParsePush(s); err != nil || back != target {
				t.Fatalf("ParsePush(%q) = %v, %v, want %v", s, back, err, target)
			}
		}
	})
}

// literal fails unless subj is n tokens, each one that ValidToken accepts:
// no wildcard, no white space, nothing that would widen a subscription.
func literal(t *testing.T, subj string, n int) {
	t.Helper()
	toks := strings.Split(subj, ".")
	if len(toks) != n {
		t.Fatalf("subject %q has %d tokens, want %d", subj, len(toks), n)
	}
	for _, tok := range toks {
		if !ValidToken(tok) {
			t.Fatalf("subject %q has token %q", subj, tok)
		}
	}
}
