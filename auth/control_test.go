package auth

import (
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
