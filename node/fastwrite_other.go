//go:build !linux

package node

import "net"

// fastWriter is the write without waiting of writer.go, on Linux only:
// elsewhere every frame goes through the queue and its flusher.
type fastWriter struct{}

func (f *fastWriter) init(net.Conn) bool { return false }

func (f *fastWriter) write(hdr, payload []byte) (int, error) {
	panic("node: fastWriter.write without init")
}
