package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
)

func TestControlSignature(t *testing.T) {
	key := ControlKey([]byte("master-secret-0123456789"))
	body := []byte(`{"sn":"R-1"}`)
	sig := SignControl(key, "hub.ctl.takeover", 1000, body)
	if !VerifyControl(key, "hub.ctl.takeover", 1000, body, sig) {
		t.Fatal("own signature refused")
	}
	for _, tc := range []struct {
		name string
		key  []byte
		bind string
		at   int64
		body string
		sig  string
	}{
		{"another key", ControlKey([]byte("other-secret-0123456789")), "hub.ctl.takeover", 1000, string(body), sig},
		{"token key", TokenKey([]byte("master-secret-0123456789")), "hub.ctl.takeover", 1000, string(body), sig},
		{"another subject", key, "hub.ctl.dir.list", 1000, string(body), sig},
		{"a reply binding", key, ReplyBinding(sig), 1000, string(body), sig},
		{"another time", key, "hub.ctl.takeover", 1001, string(body), sig},
		{"another body", key, "hub.ctl.takeover", 1000, `{"sn":"R-2"}`, sig},
		{"fields run together", key, "hub.ctl.takeover\n1000", 0, string(body), sig},
		{"empty", key, "hub.ctl.takeover", 1000, string(body), ""},
		{"not hex", key, "hub.ctl.takeover", 1000, string(body), strings.Repeat("z", 64)},
		{"short", key, "hub.ctl.takeover", 1000, string(body), sig[:62]},
		{"too long", key, "hub.ctl.takeover", 1000, string(body), sig + "00"},
	} {
		if VerifyControl(tc.key, tc.bind, tc.at, []byte(tc.body), tc.sig) {
			t.Errorf("%s: signature accepted", tc.name)
		}
	}
	if string(ControlKey([]byte("m-0123456789abcdef"))) == string(TokenKey([]byte("m-0123456789abcdef"))) {
		t.Fatal("control key equals token key")
	}
}

// TestControlSignatureReused: signatures made on reused states, under one
// key or alternating keys, are the HMAC of the message's fields, and a
// reused state costs only the signature's string.
func TestControlSignatureReused(t *testing.T) {
	keys := [][]byte{ControlKey([]byte("master-secret-0123456789")), ControlKey([]byte("other-secret-0123456789"))}
	for i := range 20 {
		key, other := keys[i%2], keys[1-i%2]
		if i >= 10 {
			key, other = keys[0], keys[1]
		}
		bind, at, body := "hub.ctl.takeover", int64(1000+i), []byte(strings.Repeat("b", i))
		m := hmac.New(sha256.New, key)
		m.Write([]byte(bind + "\n" + strconv.FormatInt(at, 10) + "\n" + string(body)))
		want := hex.EncodeToString(m.Sum(nil))
		if got := SignControl(key, bind, at, body); got != want {
			t.Fatalf("signature %d: %s, want %s", i, got, want)
		}
		if !VerifyControl(key, bind, at, body, strings.ToUpper(want)) {
			t.Fatalf("signature %d refused in upper case", i)
		}
		if VerifyControl(other, bind, at, body, want) {
			t.Fatalf("signature %d accepted under the other key", i)
		}
	}
	if raceEnabled {
		return // sync.Pool drops items at random under the race detector
	}
	key, body := keys[0], []byte(`{"sn":"R-1"}`)
	if n := testing.AllocsPerRun(100, func() { _ = SignControl(key, "hub.ctl.takeover", 1000, body) }); n > 1 {
		t.Errorf("%v allocations a signature", n)
	}
	sig := SignControl(key, "hub.ctl.takeover", 1000, body)
	if n := testing.AllocsPerRun(100, func() { _ = VerifyControl(key, "hub.ctl.takeover", 1000, body, sig) }); n > 0 {
		t.Errorf("%v allocations a check", n)
	}
}
