package subjects

import "errors"

var (
	// ErrBadToken is returned for a subject token that is empty or holds a
	// character NATS gives meaning to ('.', '*', '>') or white space.
	ErrBadToken = errors.New("subjects: invalid token")
	// ErrBadPath is returned for a service path that cannot become a subject.
	ErrBadPath = errors.New("subjects: invalid service path")
	// ErrNotPush is returned by ParsePush for a subject outside the push scheme.
	ErrNotPush = errors.New("subjects: not a push subject")
	// ErrNotWatch is returned by ParseWatch for a subject outside the watch
	// scheme.
	ErrNotWatch = errors.New("subjects: not a watch subject")
)
