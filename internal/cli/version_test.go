package cli

import "testing"

func TestVersion(t *testing.T) {
	if v := Version(); v == "" {
		t.Fatal("empty version")
	}
	old := version
	defer func() { version = old }()
	version = "v1.2.3"
	if v := Version(); v != "v1.2.3" {
		t.Fatalf("Version() = %q, want the link-time version", v)
	}
}
