package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"s3cret":      "s3cret",
		"s3cret\n":    "s3cret",
		"s3cret\r\n":  "s3cret",
		" s3 cret \n": " s3 cret ", // only the line break goes
		"s3cret\n\n":  "s3cret\n",  // one trailing line break, no more
	} {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadSecretFile("x-file", p); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", content, got, err, want)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		empty:                        "--x-file " + empty + ": the file is empty",
		filepath.Join(dir, "absent"): "--x-file " + filepath.Join(dir, "absent") + ": no such file or directory",
	} {
		if _, err := ReadSecretFile("x-file", path); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", path, err, want)
		}
	}
	if _, err := SecretFromFile("x", "direct", "x-file", empty); err == nil || !strings.Contains(err.Error(), "--x and --x-file both given (or their HUB_X, HUB_X_FILE variables): give one") {
		t.Errorf("both: %v", err)
	}
	if got, err := SecretFromFile("x", "direct", "x-file", ""); err != nil || got != "direct" {
		t.Errorf("direct: %q, %v", got, err)
	}
}
