package subjects

import (
	"errors"
	"testing"
)

func TestDCBuilders(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(dc, sn string) (string, error)
		want string
	}{
		{"status", DCDeviceStatus, "hub.dc.east.dev.R-001.status"},
		{"event", DCDeviceEvent, "hub.dc.east.dev.R-001.event"},
		{"presence", DCPresence, "hub.dc.east.presence.R-001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := tc.fn("east", "R-001"); err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			for _, bad := range [][2]string{{"", "R-001"}, {"e.w", "R-001"}, {"*", "R-001"}, {"east", "a.b"}, {"east", ""}} {
				if s, err := tc.fn(bad[0], bad[1]); !errors.Is(err, ErrBadToken) {
					t.Errorf("%q %q: got %q, %v; want ErrBadToken", bad[0], bad[1], s, err)
				}
			}
		})
	}
	for got, want := range map[string]string{
		DCAllDeviceStatus("east"): "hub.dc.east.dev.*.status",
		DCAllDeviceEvents("east"): "hub.dc.east.dev.*.event",
		DCAllPresence("east"):     "hub.dc.east.presence.*",
		DCDirList("east"):         "hub.ctl.dir.east.list",
		DCDirSummary("east"):      "hub.ctl.dir.east.summary",
		DCAllDir("east"):          "hub.ctl.dir.east.*",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
