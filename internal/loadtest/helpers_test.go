package loadtest

import (
	"os"
	"testing"
	"time"
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
