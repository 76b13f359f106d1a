//go:build unix

package main

import "syscall"

// fdLimit returns the process's open-file limit (the soft one, which Go
// raises to the hard one at start-up).
func fdLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true
}
