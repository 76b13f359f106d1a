package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestBuilders(t *testing.T) {
	tests := []struct {
		name string
		fn   func(string) (string, error)
		in   string
		want string
	}{
		{"status", DeviceStatus, "R-001", "hub.dev.R-001.status"},
		{"event", DeviceEvent, "R-001", "hub.dev.R-001.event"},
		{"cmd", DeviceCmd, "R-001", "hub.dev.R-001.cmd"},
		{"devpush", DevicePush, "R_1", "hub.dev.R_1.push"},
		{"user", UserPush, "alice", "hub.user.alice.push"},
		{"role", RolePush, "admin", "hub.role.admin.push"},
		{"type", TypePush, "dance_dog", "hub.type.dance_dog.push"},
		{"group", GroupPush, "sh-01", "hub.group.sh-01.push"},
		{"presence", Presence, "R-001", "hub.presence.R-001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.fn(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestBadTokens(t *testing.T) {
	for _, bad := range []string{"", "a.b", "*", ">", "a b", "a\tb", "a\nb", "x*", strings.Repeat("a", 257), "\x7f"} {
		for _, fn := range []func(string) (string, error){DeviceStatus, DeviceEvent, DeviceCmd, DevicePush, UserPush, RolePush, TypePush, GroupPush, Presence} {
			if s, err := fn(bad); !errors.Is(err, ErrBadToken) {
				t.Errorf("token %q: got %q, %v; want ErrBadToken", bad, s, err)
			}
		}
	}
}

func TestTargets(t *testing.T) {
	tests := []struct {
		in      string
		subject string
		ok      bool
	}{
		{"sn:R-001", "hub.dev.R-001.push", true},
		{"user:alice", "hub.user.alice.push", true},
		{"role:viewer", "hub.role.viewer.push", true},
		{"type:retail", "hub.type.retail.push", true},
		{"group:g1", "hub.group.g1.push", true},
		{"all", "hub.all.push", true},
		{"all:x", "", false},
		{"sn:", "", false},
		{"sn:a.b", "", false},
		{"planet:mars", "", false},
		{"R-001", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			target, err := ParseTarget(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseTarget(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if !tc.ok {
				return
			}
			subj, err := target.Subject()
			if err != nil || subj != tc.subject {
				t.Fatalf("Subject() = %q, %v; want %q", subj, err, tc.subject)
			}
			back, err := ParsePush(subj)
			if err != nil || back != target {
				t.Fatalf("ParsePush(%q) = %v, %v; want %v", subj, back, err, target)
			}
			if target.String() != tc.in {
				t.Fatalf("String() = %q, want %q", target.String(), tc.in)
			}
		})
	}
	for _, bad := range []string{"hub.dev.x.cmd", "hub.dev.push", "hub.foo.x.push", "nats.dev.x.push", "hub.dev.*.push", ""} {
		if _, err := ParsePush(bad); !errors.Is(err, ErrNotPush) {
			t.Errorf("ParsePush(%q) err = %v, want ErrNotPush", bad, err)
		}
	}
}

func TestServicePaths(t *testing.T) {
	tests := []struct {
		path, subject string
	}{
		{"/a", "hub.svc.a"},
		{"/map/route", "hub.svc.map.route"},
		{"/cmd/move-to", "hub.svc.cmd.move-to"},
	}
	for _, tc := range tests {
		got, err := Service(tc.path)
		if err != nil || got != tc.subject {
			t.Fatalf("Service(%q) = %q, %v", tc.path, got, err)
		}
		back, err := ServicePath(got)
		if err != nil || back != tc.path {
			t.Fatalf("ServicePath(%q) = %q, %v", got, back, err)
		}
	}
	for _, bad := range []string{"", "/", "a/b", "/a/", "//a", "/a//b", "/a.b", "/a/*", "/a/>", "/a b", "/" + strings.Repeat("a/", 17) + "a"} {
		if _, err := Service(bad); !errors.Is(err, ErrBadPath) {
			t.Errorf("Service(%q) err = %v, want ErrBadPath", bad, err)
		}
	}
	if sn, ok := ParseDeviceCmd("hub.dev.R-1.cmd"); !ok || sn != "R-1" {
		t.Fatalf("ParseDeviceCmd = %q, %v", sn, ok)
	}
}
