package dashboard

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub/wire"
)

// TestHubTypes type-checks hub.d.ts, as the node serves it, with `tsc
// --noEmit --strict`, together with testdata/hub_usage.ts: a program using
// the whole API, whose @ts-expect-error lines check that misuses do not
// compile. tsc is TypeScript 5 from the npm registry, installed once into
// the user's cache directory; without node and npm the test is skipped.
func TestHubTypes(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: checking hub.d.ts with tsc needs Node.js and npm")
	}
	tsc := typescript5(t)

	res := get(t, Handler(), http.MethodGet, "/hub.d.ts", nil)
	types, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("GET /hub.d.ts: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	usage, err := os.ReadFile(filepath.Join("testdata", "hub_usage.ts"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"hub.d.ts": types, "hub_usage.ts": usage} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, tsc, "--noEmit", "--strict", "--pretty", "false",
		"--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler", "--lib", "es2022,dom",
		"hub.d.ts", "hub_usage.ts")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
	// The types alone need no DOM.
	cmd = exec.CommandContext(ctx, nodeBin, tsc, "--noEmit", "--strict", "--pretty", "false",
		"--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler", "--lib", "es2022", "hub.d.ts")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc on hub.d.ts without the DOM: %v\n%s", err, out)
	}
}

// typescript5 returns the path of tsc of TypeScript 5, installing it with
// npm into the user's cache directory the first time. It skips the test
// when that cannot be done (no npm, no registry).
func typescript5(t *testing.T) string {
	t.Helper()
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	base = filepath.Join(base, "fleethub")
	cache := filepath.Join(base, "typescript5")
	tsc := filepath.Join(cache, "node_modules", "typescript", "bin", "tsc")
	if _, err := os.Stat(tsc); err == nil {
		return tsc
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: checking hub.d.ts needs typescript@5 from the npm registry")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Skipf("no cache directory for typescript@5: %v", err)
	}
	// Install into a directory of its own, then move it into place in one
	// step, so that a concurrent run never sees half an installation.
	tmp, err := os.MkdirTemp(base, "typescript5-*")
	if err != nil {
		t.Skipf("no cache directory for typescript@5: %v", err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", tmp, "--no-audit", "--no-fund", "--loglevel=error", "typescript@5")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("npm install typescript@5 failed, so hub.d.ts is not checked: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, cache); err != nil {
		if _, serr := os.Stat(tsc); serr != nil { // not another run's installation
			t.Fatalf("install typescript@5 into %s: %v", cache, err)
		}
	}
	return tsc
}

// TestHubTypesDeclareEveryExport: hub.d.ts declares exactly what hub.js
// exports, and FleetHub's members are the same.
func TestHubTypesDeclareEveryExport(t *testing.T) {
	js, _ := static.ReadFile("static/hub.js")
	dts, err := static.ReadFile("static/hub.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	list := func(re, s string) []string {
		m := regexp.MustCompile(re).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("no match of %s", re)
		}
		var names []string
		for n := range strings.SplitSeq(m[1], ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		return names
	}
	exported := list(`(?m)^export \{([^}]*)\};`, string(js))
	var declared []string
	for _, m := range regexp.MustCompile(`(?m)^export declare (?:const|function|class) (\w+)`).FindAllStringSubmatch(string(dts), -1) {
		declared = append(declared, m[1])
	}
	slices.Sort(declared)
	if !slices.Equal(exported, declared) {
		t.Errorf("hub.js exports %v, hub.d.ts declares %v", exported, declared)
	}
	if members := list(`(?m)^const FleetHub = \{([^}]*)\};`, string(js)); !slices.Equal(members, exported) {
		t.Errorf("FleetHub has %v, the module exports %v", members, exported)
	}
	ns := regexp.MustCompile(`(?s)interface FleetHubNamespace \{(.*?)\n\}`).FindStringSubmatch(string(dts))
	if ns == nil {
		t.Fatal("hub.d.ts has no FleetHubNamespace")
	}
	var typed []string
	for _, m := range regexp.MustCompile(`(?m)^\s*(\w+):`).FindAllStringSubmatch(ns[1], -1) {
		typed = append(typed, m[1])
	}
	slices.Sort(typed)
	if !slices.Equal(typed, exported) {
		t.Errorf("FleetHubNamespace has %v, the module exports %v", typed, exported)
	}
	if !strings.Contains(string(js), "export default Hub;") || !strings.Contains(string(dts), "export default Hub;") {
		t.Error("the default export is not Hub in both")
	}
}

// TestRegistryChangedReason: hub.js and hub.d.ts name the close reason of
// a registry change as the hub sends it.
func TestRegistryChangedReason(t *testing.T) {
	js, _ := static.ReadFile("static/hub.js")
	dts, _ := static.ReadFile("static/hub.d.ts")
	if want := `const REGISTRY_CHANGED = "` + wire.ReasonRegistryChanged + `";`; !strings.Contains(string(js), want) {
		t.Errorf("hub.js lacks %s", want)
	}
	if want := `REGISTRY_CHANGED: "` + wire.ReasonRegistryChanged + `";`; !strings.Contains(string(dts), want) {
		t.Errorf("hub.d.ts lacks %s", want)
	}
}
