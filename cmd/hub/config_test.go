package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// A value the node cannot run with is one line naming its flag, exit 2,
// before anything starts (the listen address is one this test holds, so
// anything that got as far as listening would fail differently).
func TestConfigErrorsNameTheFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--master-secret", "too-short"}, "hub: --master-secret (or --master-secret-file, HUB_MASTER_SECRET): 9 bytes; want at least 16"},
		{[]string{"--dev", "--ping-interval", "10s", "--pong-wait", "5s"}, "hub: --pong-wait 5s: want more than --ping-interval (10s)"},
		{[]string{"--dev", "--presence-ttl", "1s"}, "hub: --presence-ttl 1s: want at least 2s"},
		{[]string{"--dev", "--node-ttl", "100ms"}, "hub: --node-ttl 100ms: want at least 300ms"},
		{[]string{"--dev", "--offline-grace", "-1s"}, "hub: --offline-grace -1s: must not be negative"},
		{[]string{"--dev", "--status-history", "0"}, "hub: --status-history 0: want at least 1"},
		{[]string{"--dev", "--queue-bytes", "0"}, "hub: --queue-bytes 0: want at least 1"},
	} {
		var code int
		out := captureStderr(t, func() { code = run(append(c.args, "--log-level", "error", "--nats-listen", "127.0.0.1:-1")) })
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], c.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and one line starting %q", c.args, code, out, c.want)
		}
	}
}

// --print-config prints the effective configuration, one flag a line,
// with the secrets and the credentials of NATS URLs hidden.
func TestPrintConfig(t *testing.T) {
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	secret := fs.String("master-secret", "", "")
	fs.String("nats-password", "", "")
	url := fs.String("nats-url", "", "")
	fs.Int("replicas", 1, "")
	*secret, *url = "s3cret-s3cret-s3cret", "nats://u:p4ss@127.0.0.1:4222"
	var b bytes.Buffer
	printConfig(&b, fs)
	got := b.String()
	want := "--master-secret=<redacted>\n--nats-password=<empty>\n--nats-url=nats://REDACTED@127.0.0.1:4222\n--replicas=1\n"
	if strings.Contains(got, "s3cret") || strings.Contains(got, "p4ss") {
		t.Fatalf("a secret in the printed configuration:\n%s", got)
	}
	if got != want {
		t.Fatalf("printed\n%s\nwant\n%s", got, want)
	}
}
