package main

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/fleethub/fleethub/hub/wire"
	"github.com/nats-io/nuid"
)

// benchService is the service the bench's hub target pushes on
// ({"service":"/push/bench","values":...} on hub.all.push and
// hub.dev.<sn>.push).
const benchService = "/push/bench"

// framer renders the frames the hub writes in the bench's publish
// scenarios: the benchmark payload {"t":<ns>,"s":<seq>,"p":"xx.."} (built
// as wsload builds it) inside the push envelope the hub encodes
// (wire.EncodePush, with a NUID for the id as the hub gives a push that
// comes without one), in one unmasked WebSocket text frame.
type framer struct {
	pad  string
	buf  []byte // the payload, reused
	msg  []byte // the frame, reused
	nuid *nuid.NUID
}

func newFramer(payload int) *framer {
	return &framer{pad: strings.Repeat("x", max(0, payload-48)), nuid: nuid.New()}
}

// frame returns the frame for message seq sent at ts (Unix ns). The slice
// is reused by the next call.
func (f *framer) frame(ts, seq int64) ([]byte, error) {
	b := f.buf[:0]
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"p":"`...)
	b = append(b, f.pad...)
	b = append(b, `"}`...)
	f.buf = b
	push, err := wire.EncodePush(benchService, f.nuid.Next(), b)
	if err != nil {
		return nil, err
	}
	f.msg = appendFrame(f.msg[:0], opText, push)
	return f.msg, nil
}

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opText  = 0x1
	opClose = 0x8
)

// appendFrame appends one final, unmasked frame (a server's frame) with
// the given opcode and payload to dst.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n <= 125:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}
