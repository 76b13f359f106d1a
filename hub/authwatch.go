package hub

// AuthWatcher is implemented by a Transport that wants to know when its
// session has authenticated: the node counts connections that have not,
// against its caps on unauthenticated connections, and stops counting one
// the moment it has an identity.
//
// Authenticated is called at most once per session, after the identity is
// set, on the goroutine that served the auth request, with no hub lock
// held. It must not block. A session that never authenticates is never
// reported; its end comes through Session.Gone as usual.
type AuthWatcher interface {
	Authenticated()
}

// notifyAuthenticated tells the transport, if it asked, that the session
// has its identity.
func (s *Session) notifyAuthenticated() {
	if w, ok := s.t.(AuthWatcher); ok {
		w.Authenticated()
	}
}
