package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
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
	return hex.EncodeToString(controlMAC(key, bind, atMS, body))
}

// VerifyControl reports whether sig is SignControl's signature of the
// message, in constant time.
func VerifyControl(key []byte, bind string, atMS int64, body []byte, sig string) bool {
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	return hmac.Equal(got, controlMAC(key, bind, atMS, body))
}

// ReplyBinding is what a reply's signature binds: the signature of the
// request it answers, so that a signed reply answers one request only.
func ReplyBinding(requestSig string) string { return "re " + requestSig }

func controlMAC(key []byte, bind string, atMS int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(bind))
	m.Write([]byte{'\n'})
	m.Write(strconv.AppendInt(nil, atMS, 10))
	m.Write([]byte{'\n'})
	m.Write(body)
	return m.Sum(nil)
}
