package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// TestVersion: --version prints "hub <version>" on standard output and
// exits 0, before anything else happens (no secret needed).
func TestVersion(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	code := run([]string{"--version"})
	os.Stdout = stdout
	_ = w.Close()
	out, _ := io.ReadAll(r)
	if code != 0 || !strings.HasPrefix(string(out), "hub ") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
}
