package node

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"testing"

	"github.com/gorilla/websocket"
)

// rawClient is a WebSocket client that parses the server's frames by hand
// and strictly: every frame final, no reserved bits, unmasked, a known
// opcode, control frames of at most 125 bytes. A frame that breaks one of
// these is an error, so a test reading through it proves the stream valid
// byte for byte. It reads only when asked, so a test can stop reading and
// let the server's socket fill.
type rawClient struct {
	nc  net.Conn
	br  *bufio.Reader
	buf []byte   // the last payload; reused
	h   [10]byte // the last header
}

// dialRaw upgrades a connection to url (ws://host/ws) and hands it over to
// a rawClient. The server sends nothing before the client speaks, so the
// dialer has buffered nothing past the handshake.
func dialRaw(t testing.TB, wsURL string) *rawClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	_ = resp.Body.Close()
	nc := conn.NetConn()
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{nc: nc, br: bufio.NewReaderSize(nc, 4096)}
}

// wsURLOf is the /ws URL of an httptest server's URL.
func wsURLOf(serverURL string) string {
	u, _ := url.Parse(serverURL)
	return "ws://" + u.Host + "/ws"
}

// next reads one frame. The payload is valid until the next call.
func (rc *rawClient) next() (op byte, payload []byte, err error) {
	h := rc.h[:]
	if _, err := io.ReadFull(rc.br, h[:2]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 {
		return 0, nil, fmt.Errorf("frame header %#x %#x: not final or reserved bits set", h[0], h[1])
	}
	op = h[0] & 0x0f
	if h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("frame header %#x %#x: masked", h[0], h[1])
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(rc.br, h[2:4]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[2:4]))
		if n < 126 {
			return 0, nil, fmt.Errorf("length %d in a 16-bit field", n)
		}
	case 127:
		if _, err := io.ReadFull(rc.br, h[2:10]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(h[2:10])
		if n <= 0xffff || n > 1<<30 {
			return 0, nil, fmt.Errorf("length %d in a 64-bit field", n)
		}
	}
	switch op {
	case websocket.TextMessage:
	case websocket.CloseMessage, websocket.PingMessage, websocket.PongMessage:
		if n > 125 {
			return 0, nil, fmt.Errorf("control frame %d of %d bytes", op, n)
		}
	default:
		return 0, nil, fmt.Errorf("unexpected opcode %d", op)
	}
	if uint64(cap(rc.buf)) < n {
		rc.buf = make([]byte, n)
	}
	rc.buf = rc.buf[:n]
	if _, err := io.ReadFull(rc.br, rc.buf); err != nil {
		return 0, nil, err
	}
	return op, rc.buf, nil
}

// writeFrame sends one masked client frame.
func (rc *rawClient) writeFrame(op byte, payload []byte) error {
	if len(payload) > 125 {
		panic("writeFrame: payload over 125 bytes")
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b := append([]byte{0x80 | op, 0x80 | byte(len(payload))}, key[:]...)
	for i, p := range payload {
		b = append(b, p^key[i%4])
	}
	_, err := rc.nc.Write(b)
	return err
}

// closeCode parses a close frame's payload.
func closeCode(payload []byte) (int, string) {
	if len(payload) < 2 {
		return websocket.CloseNoStatusReceived, ""
	}
	return int(binary.BigEndian.Uint16(payload)), string(payload[2:])
}
