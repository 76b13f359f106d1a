package hub

import (
	"testing"

	"github.com/fleethub/fleethub/hub/schema"
)

// A registered device is listed and counted with its registry entry's type
// and group, also after a record that names the old ones (a device that
// came back within its grace after its entry changed writes no record).
func TestDirIndexRegistryWins(t *testing.T) {
	x := newDirIndex()
	x.record(&PresenceRecord{SN: "R-1", Online: true, Type: "robot", Group: "old", Node: "n1", At: 1}, 1)
	x.register("R-1", &schema.Device{Type: "robot", Group: "sh-01"})
	d := x.bySN["R-1"]
	if d.group != "sh-01" {
		t.Fatalf("group %q after the registry change, want sh-01", d.group)
	}
	if c := x.summary([]string{"*"}).ByGroup; c["sh-01"].Online != 1 || c["old"].Online != 0 {
		t.Fatalf("summary by group %+v, want the device online in sh-01 only", c)
	}
	x.record(&PresenceRecord{SN: "R-1", Online: false, Type: "robot", Group: "old", At: 2}, 2)
	if d.group != "sh-01" {
		t.Fatalf("group %q after a record naming the old group, want sh-01", d.group)
	}
	x.register("R-1", nil)
	x.record(&PresenceRecord{SN: "R-1", Online: true, Type: "robot", Group: "free", Node: "n1", At: 3}, 3)
	if d.group != "free" {
		t.Fatalf("group %q of an unregistered device, want the record's (free)", d.group)
	}
}
