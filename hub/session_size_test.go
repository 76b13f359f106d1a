package hub

import (
	"testing"
	"unsafe"
)

// Every idle session holds a Session: it stays within the 480-byte size
// class (it was 504 bytes, in the 512-byte class).
func TestSessionSize(t *testing.T) {
	if n := unsafe.Sizeof(Session{}); n > 480 {
		t.Errorf("Session is %d bytes, want at most 480", n)
	}
}
