package hub

import "testing"

func TestMemberSet(t *testing.T) {
	var m memberSet
	sessions := make([]*Session, 20)
	for i := range sessions {
		sessions[i] = &Session{id: string(rune('a' + i))}
	}
	count := func() int {
		n := 0
		m.each(func(*Session) { n++ })
		return n
	}
	for i, s := range sessions {
		m.add(s)
		m.add(s) // twice: still once
		if m.len() != i+1 || count() != i+1 {
			t.Fatalf("after %d adds: len %d, each %d", i+1, m.len(), count())
		}
	}
	if m.many == nil {
		t.Fatal("large set is not a map")
	}
	for i, s := range sessions {
		m.remove(s)
		if m.len() != len(sessions)-i-1 {
			t.Fatalf("after %d removes: len %d", i+1, m.len())
		}
	}
	var small memberSet
	small.add(sessions[0])
	small.add(sessions[1])
	small.remove(sessions[0])
	small.remove(sessions[5]) // absent
	if small.len() != 1 || small.few[0] != sessions[1] {
		t.Fatalf("small set %v", small.few)
	}
}
