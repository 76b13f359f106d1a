package client_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/client"
)

func TestConfigValidate(t *testing.T) {
	dev := &client.DeviceAuth{SN: "R-1", Key: []byte("k")}
	login := &client.LoginAuth{Username: "u", Password: "p"}
	tests := []struct {
		name string
		cfg  client.Config
		want []string // parts of the error; none for a valid config
	}{
		{"device", client.Config{URL: "ws://h/ws", Device: dev}, nil},
		{"login over URLs", client.Config{URLs: []string{"ws://a/ws", "wss://b/ws"}, Login: login}, nil},
		{"token", client.Config{URL: "ws://h/ws", Token: "t"}, nil},
		{"nothing", client.Config{}, []string{"URL or URLs is required", "exactly one of"}},
		{"two identities", client.Config{URL: "ws://h/ws", Device: dev, Token: "t"}, []string{"exactly one of"}},
		{"bad URL", client.Config{URLs: []string{"http://h/ws"}, Token: "t"}, []string{`URL "http://h/ws"`}},
		{"bad device", client.Config{URL: "ws://h/ws", Device: &client.DeviceAuth{SN: "R 1"}}, []string{"Device.SN", "Device.Key"}},
		{"bad login", client.Config{URL: "ws://h/ws", Login: &client.LoginAuth{Username: "u"}}, []string{"Password"}},
		{"backoff", client.Config{URL: "ws://h/ws", Token: "t", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, []string{"MinBackoff"}},
		{"negative", client.Config{URL: "ws://h/ws", Token: "t", RequestTimeout: -1}, []string{"negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
