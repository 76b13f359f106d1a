package hub

// memberSet is the sessions of one interest. Most interests are one
// device's or one user's and have one or two members, so small sets are a
// short slice (a map costs a few hundred bytes even for one entry, and an
// idle node holds two such interests per device); past smallSet members it
// becomes a map, so that joins and leaves stay O(1) for large interests.
type memberSet struct {
	few  []*Session
	many map[*Session]struct{}
}

const smallSet = 8

func (m *memberSet) add(s *Session) {
	if m.many != nil {
		m.many[s] = struct{}{}
		return
	}
	for _, x := range m.few {
		if x == s {
			return
		}
	}
	if len(m.few) < smallSet {
		m.few = append(m.few, s)
		return
	}
	m.many = make(map[*Session]struct{}, 2*smallSet)
	for _, x := range m.few {
		m.many[x] = struct{}{}
	}
	m.many[s] = struct{}{}
	m.few = nil
}

func (m *memberSet) remove(s *Session) {
	if m.many != nil {
		delete(m.many, s)
		return
	}
	for i, x := range m.few {
		if x == s {
			last := len(m.few) - 1
			m.few[i] = m.few[last]
			m.few[last] = nil
			m.few = m.few[:last]
			return
		}
	}
}

func (m *memberSet) len() int {
	if m.many != nil {
		return len(m.many)
	}
	return len(m.few)
}

func (m *memberSet) each(fn func(*Session)) {
	if m.many != nil {
		for s := range m.many {
			fn(s)
		}
		return
	}
	for _, s := range m.few {
		fn(s)
	}
}
