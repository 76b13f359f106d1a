//go:build !unix

package main

// fdLimit is unknown here: only maxDevices bounds the devices.
func fdLimit() (uint64, bool) { return 0, false }
