package loadtest

import (
	"os"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
)

func TestParseMetrics(t *testing.T) {
	m := ParseMetrics([]byte("# HELP x y\n# TYPE x counter\nfleethub_slow_consumers_total 0\n" +
		"fleethub_sessions{role=\"device\"} 12\nfleethub_sessions{role=\"admin\"} 3\nbad line\n"))
	if got := m[`fleethub_sessions{role="device"}`]; got != 12 {
		t.Errorf("device sessions = %v, want 12", got)
	}
	if got := m.Sum("fleethub_sessions"); got != 15 {
		t.Errorf("Sum = %v, want 15", got)
	}
	if v, ok := m["fleethub_slow_consumers_total"]; !ok || v != 0 {
		t.Errorf("slow consumers = %v %v", v, ok)
	}
}

func TestSendStamp(t *testing.T) {
	line := []byte(`{"op":"push","service":"/push/bench","id":"x","values":{"t":1700000000123456789,"pad":"xx"}}`)
	if v, ok := sendStamp(line); !ok || v != 1700000000123456789 {
		t.Errorf("sendStamp = %d %v", v, ok)
	}
	if _, ok := sendStamp([]byte(`{"op":"push","values":{}}`)); ok {
		t.Error("stamp found where there is none")
	}
}

func TestReservoirQuantiles(t *testing.T) {
	r := NewReservoir(1000, 4)
	for i := 1; i <= 100000; i++ {
		r.Add(i, time.Duration(i%1000+1)*time.Microsecond)
	}
	q, n := r.Quantiles(0.5, 0.99)
	if n != 100000 {
		t.Fatalf("count %d", n)
	}
	if q[0] < 400*time.Microsecond || q[0] > 600*time.Microsecond {
		t.Errorf("p50 = %v, want about 500µs", q[0])
	}
	if q[1] < 950*time.Microsecond {
		t.Errorf("p99 = %v, want about 990µs", q[1])
	}
	r.Reset()
	if _, n := r.Quantiles(0.5); n != 0 {
		t.Errorf("count after Reset = %d", n)
	}
}

func TestProcSelf(t *testing.T) {
	if _, err := CPUTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if rss, err := RSS(os.Getpid()); err != nil || rss <= 0 {
		t.Fatalf("RSS = %d, %v", rss, err)
	}
}

func TestCheckAlternation(t *testing.T) {
	on := hub.PresenceRecord{Online: true, Reason: hub.ReasonConnected}
	off := hub.PresenceRecord{Reason: hub.ReasonClosed}
	lost := hub.PresenceRecord{Reason: hub.ReasonNodeLost}
	for _, tc := range []struct {
		name string
		h    []hub.PresenceRecord
		bad  int // index of the record at fault, -1 for none
	}{
		{"empty", nil, -1},
		{"alternating", []hub.PresenceRecord{on, off, on, lost, on}, -1},
		{"starts offline", []hub.PresenceRecord{off, on}, 0},
		{"two offline", []hub.PresenceRecord{on, off, off, on}, 2},
		{"two connected", []hub.PresenceRecord{on, on}, 1},
		{"offline named connected", []hub.PresenceRecord{on, {Reason: hub.ReasonConnected}}, 1},
		{"online of another reason", []hub.PresenceRecord{{Online: true, Reason: hub.ReasonClosed}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, err := CheckAlternation(tc.h)
			if i != tc.bad || (err != nil) != (tc.bad >= 0) {
				t.Errorf("CheckAlternation = %d, %v; want %d", i, err, tc.bad)
			}
		})
	}
}

func TestLedgerCheck(t *testing.T) {
	l := NewLedger()
	s1 := l.Next("d", KindStatus)
	s2 := l.Next("d", KindStatus) // sent, never acknowledged
	e1 := l.Next("d", KindEvent)
	l.Acked("d", KindStatus, s1)
	l.Acked("d", KindEvent, e1)
	if s1 == s2 || s1 == e1 {
		t.Fatalf("content ids not unique: %s %s %s", s1, s2, e1)
	}
	c := l.Check([numKinds]map[string]bool{{s1: true, s2: true}, {}})
	if c.Missing != 1 || c.MissingSample[0] != "event "+e1 {
		t.Errorf("missing = %d %v, want the event %s", c.Missing, c.MissingSample, e1)
	}
	if c.Sent != [numKinds]int{2, 1} || c.Acked != [numKinds]int{1, 1} || c.StoredUnacked[KindStatus] != 1 {
		t.Errorf("check = %+v", c)
	}
	if got := l.MaxSent(KindStatus); got != 2 {
		t.Errorf("MaxSent = %d, want 2", got)
	}
}
