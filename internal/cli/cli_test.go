package cli

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args    []string
		pos     []string
		timeout time.Duration
		to      string
	}{
		{[]string{"R-1", "/cmd/x", "{}", "--timeout", "2s"}, []string{"R-1", "/cmd/x", "{}"}, 2 * time.Second, ""},
		{[]string{"--timeout=3s", "R-1"}, []string{"R-1"}, 3 * time.Second, ""},
		{[]string{"--to", "all", "/push/x", "--timeout", "1s", "{}"}, []string{"/push/x", "{}"}, time.Second, "all"},
		{[]string{"a", "--", "--timeout"}, []string{"a", "--timeout"}, 5 * time.Second, ""},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		timeout := fs.Duration("timeout", 5*time.Second, "")
		to := fs.String("to", "", "")
		pos, err := Parse(fs, tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if !slices.Equal(pos, tc.pos) || *timeout != tc.timeout || *to != tc.to {
			t.Fatalf("%v: got %v %v %q", tc.args, pos, *timeout, *to)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	url := fs.String("nats-url", "", "")
	env := map[string]string{"HUB_NATS_URL": "nats://x:4222"}
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if *url != "nats://x:4222" {
		t.Fatalf("got %q", *url)
	}
	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.Duration("pong-wait", time.Second, "")
	if err := ApplyEnv(fs2, func(string) (string, bool) { return "soon", true }); err == nil {
		t.Fatal("bad env value accepted")
	}
}

func TestParseFlags(t *testing.T) {
	env := map[string]string{"HUB_N": "3"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct {
		args    []string
		env     bool
		code    int
		ok      bool
		n       int
		stderr  string
		badEnvN string
	}{
		{args: nil, env: true, ok: true, n: 3},
		{args: []string{"--n", "5"}, env: true, ok: true, n: 5},
		{args: []string{"-h"}, code: 0},
		{args: []string{"--n", "x"}, code: 2},
		{args: []string{"extra"}, code: 2, stderr: `prog: unexpected argument "extra"`},
		{badEnvN: "y", code: 2, stderr: `prog: HUB_N="y"`},
	}
	for _, c := range cases {
		fs := flag.NewFlagSet("prog", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		n := fs.Int("n", 0, "")
		look := lookup
		if !c.env {
			look = func(string) (string, bool) { return "", false }
		}
		if c.badEnvN != "" {
			look = func(string) (string, bool) { return c.badEnvN, true }
		}
		var stderr strings.Builder
		code, ok := ParseFlags("prog", fs, c.args, look, &stderr)
		if code != c.code || ok != c.ok || (ok && *n != c.n) || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("%v: code %d ok %v n %d stderr %q", c.args, code, ok, *n, stderr.String())
		}
	}
}
