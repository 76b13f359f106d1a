//go:build linux

package node

import (
	"net"
	"syscall"
	"unsafe"
)

// fastWriter tries one write of a frame, header and payload together in
// one writev(2), on the goroutine that delivers it, without waiting for
// the socket: the delivery to an idle session (writer.go).
type fastWriter struct {
	rc syscall.RawConn
	// try, bound once: a func value made per write would be allocated
	// per write.
	fn func(fd uintptr) bool

	// What try writes and what it found; the socket's owner alone uses
	// them, for one write at a time.
	iov   [2]syscall.Iovec
	cnt   int
	n     int
	errno syscall.Errno
}

// init readies the writer for nc, and reports whether nc allows it (a
// TCP connection does; a TLS one does not).
func (f *fastWriter) init(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	f.rc, f.fn = rc, f.try
	return true
}

// write writes what of hdr and then payload the socket takes at once: n
// is how many bytes, 0 when the socket's buffer is full. err is set only
// when the socket cannot be written (closed, broken, or a write deadline
// passed, which stops the write before any byte). hdr is not empty.
func (f *fastWriter) write(hdr, payload []byte) (n int, err error) {
	f.iov[0].Base = &hdr[0]
	f.iov[0].SetLen(len(hdr))
	f.cnt = 1
	if len(payload) > 0 {
		f.iov[1].Base = &payload[0]
		f.iov[1].SetLen(len(payload))
		f.cnt = 2
	}
	f.n, f.errno = 0, 0
	err = f.rc.Write(f.fn)
	f.iov = [2]syscall.Iovec{} // holds no payload once written
	switch {
	case err != nil:
		return 0, err
	case f.errno != 0:
		return 0, f.errno
	}
	return f.n, nil
}

// try makes the one write; returning true, always, tells the runtime not
// to wait for the socket to be writable.
func (f *fastWriter) try(fd uintptr) bool {
	for {
		n, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&f.iov[0])), uintptr(f.cnt))
		switch e {
		case 0:
			f.n = int(n)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			f.n = 0
		default:
			f.errno = e
		}
		return true
	}
}
