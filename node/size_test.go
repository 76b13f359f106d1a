package node

import (
	"testing"
	"unsafe"
)

// Every idle session holds a wsConn: it stays within the 384-byte size
// class (it was 440 bytes, with a sync.Cond and a copy of the hijacked
// conn for gorilla).
func TestWSConnSize(t *testing.T) {
	if n := unsafe.Sizeof(wsConn{}); n > 384 {
		t.Errorf("wsConn is %d bytes, want at most 384", n)
	}
}
