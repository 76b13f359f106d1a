package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"sync"
)

// ControlKey derives the key that signs the hub's node-to-node control
// messages (takeover announcements, directory requests and replies):
// HMAC-SHA256(masterSecret, "hub-control:v1"). Only holders of the master
// secret, the hub nodes, can sign; the label keeps it apart from device
// and token keys.
func ControlKey(masterSecret []byte) []byte {
	m := hmac.New(sha256.New, masterSecret)
	m.Write([]byte("hub-control:v1"))
	return m.Sum(nil)
}

// SignControl returns the hex HMAC-SHA256, under a ControlKey, of a
// control message: what binds it (its subject, or for a reply, ReplyBinding
// of the request's signature), its signing time in Unix milliseconds, and
// its body. A subject holds no space or newline, so the fields cannot run
// into each other.
func SignControl(key []byte, bind string, atMS int64, body []byte) string {
	st := controlStateFor(key)
	st.buf = hex.AppendEncode(st.buf[:0], st.mac(bind, atMS, body))
	sig := string(st.buf)
	controlStates.Put(st)
	return sig
}

// VerifyControl reports whether sig is SignControl's signature of the
// message, in constant time. Either hex case is accepted.
func VerifyControl(key []byte, bind string, atMS int64, body []byte, sig string) bool {
	var got [sha256.Size]byte
	if !decodeSum(&got, sig) {
		return false
	}
	st := controlStateFor(key)
	ok := hmac.Equal(got[:], st.mac(bind, atMS, body))
	controlStates.Put(st)
	return ok
}

// decodeSum decodes sig, the hex of a SHA-256 sum in either case, into
// sum, reporting false when sig is not one.
func decodeSum(sum *[sha256.Size]byte, sig string) bool {
	if len(sig) != 2*len(sum) {
		return false
	}
	for i := range sum {
		hi, ok1 := fromHex(sig[2*i])
		lo, ok2 := fromHex(sig[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		sum[i] = hi<<4 | lo
	}
	return true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ReplyBinding is what a reply's signature binds: the signature of the
// request it answers, so that a signed reply answers one request only.
func ReplyBinding(requestSig string) string { return "re " + requestSig }

// controlState is an HMAC-SHA256 state keyed with a control key, with
// room for what it hashes and for its sum. States are reset and reused
// (controlStates): a node signs and checks every control message with one
// key, and a connect signs and checks one (its takeover), so that a
// signature then costs no new state or buffer. A state of another key
// (tests run nodes of several) is dropped for a new one.
type controlState struct {
	key []byte
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

var controlStates sync.Pool // of *controlState

// controlStateFor takes a state keyed with key from controlStates, or
// makes one; the caller puts it back.
func controlStateFor(key []byte) *controlState {
	if st, _ := controlStates.Get().(*controlState); st != nil && hmac.Equal(st.key, key) {
		st.h.Reset()
		return st
	}
	return &controlState{key: bytes.Clone(key), h: hmac.New(sha256.New, key)}
}

// mac is the HMAC of a control message's fields, in st.sum.
func (st *controlState) mac(bind string, atMS int64, body []byte) []byte {
	st.buf = append(st.buf[:0], bind...)
	st.buf = append(st.buf, '\n')
	st.buf = strconv.AppendInt(st.buf, atMS, 10)
	st.buf = append(st.buf, '\n')
	st.h.Write(st.buf)
	st.h.Write(body)
	return st.h.Sum(st.sum[:0])
}
