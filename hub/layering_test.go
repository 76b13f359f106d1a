package hub

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/fleethub/fleethub"

// nonStdDeps lists the packages outside the standard library that pkgs
// depend on (test files excluded), pkgs included.
func nonStdDeps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"}, pkgs...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	return strings.Fields(string(out))
}

// TestLayering keeps the layout of STYLE.md true:
//   - hub is transport-free: no melody, chi, WebSocket library or node, and
//     no nats-server (the embedded server lives in internal/embedded);
//   - subjects and auth are leaves without NATS or net/http;
//   - hub/schema imports the standard library and subjects only;
//   - hub/presence knows no Session and no Server: it imports neither hub
//     nor node, only hub/schema, subjects, internal/kvwatch and
//     internal/jscreate of this module;
//   - cmd/hubctl works from hub/schema and subjects, never hub.
func TestLayering(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pkgs   []string
		banned []string // no dependency is one of these or below one
		exact  []string // no dependency is one of these (subpackages may be)
	}{
		{"hub", []string{module + "/hub", module + "/subjects", module + "/auth"},
			[]string{"github.com/olahol/melody", "github.com/go-chi/chi", "github.com/gorilla/websocket", module + "/node", "github.com/nats-io/nats-server"}, nil},
		{"hubctl", []string{module + "/cmd/hubctl"},
			[]string{"github.com/nats-io/nats-server"}, []string{module + "/hub"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, dep := range nonStdDeps(t, tc.pkgs...) {
				for _, banned := range tc.banned {
					if dep == banned || strings.HasPrefix(dep, banned+"/") {
						t.Errorf("%s depends on %s", tc.name, dep)
					}
				}
				if slices.Contains(tc.exact, dep) {
					t.Errorf("%s depends on %s", tc.name, dep)
				}
			}
		})
	}
	t.Run("hubctl-schema", func(t *testing.T) {
		if deps := nonStdDeps(t, module+"/cmd/hubctl"); !slices.Contains(deps, module+"/hub/schema") {
			t.Errorf("hubctl does not use hub/schema: %v", deps)
		}
	})
	t.Run("leaves", func(t *testing.T) {
		out, _ := exec.Command("go", "list", "-deps", module+"/subjects", module+"/auth").Output()
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "nats") || dep == "net/http" {
				t.Errorf("leaf packages depend on %s", dep)
			}
		}
	})
	t.Run("presence", func(t *testing.T) {
		allowed := []string{module + "/hub/presence", module + "/hub/schema", module + "/subjects", module + "/internal/kvwatch", module + "/internal/jscreate"}
		for _, dep := range nonStdDeps(t, module+"/hub/presence") {
			if strings.HasPrefix(dep, module+"/") && !slices.Contains(allowed, dep) {
				t.Errorf("hub/presence depends on %s", dep)
			}
		}
	})
	t.Run("schema", func(t *testing.T) {
		for _, dep := range nonStdDeps(t, module+"/hub/schema") {
			if dep != module+"/hub/schema" && dep != module+"/subjects" {
				t.Errorf("hub/schema depends on %s: it may import the standard library and subjects only", dep)
			}
		}
	})
}
