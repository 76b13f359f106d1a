package dcs

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering: the engine depends on the hub's leaves (hub/schema,
// subjects) and internal/jscreate, never on package hub, node or an
// embedded nats-server; the hub hands it Sign and Verify instead.
func TestLayering(t *testing.T) {
	const module = "github.com/fleethub/fleethub"
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+"/hub/dcs").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	allowed := map[string]bool{module + "/hub/dcs": true, module + "/hub/schema": true, module + "/subjects": true, module + "/internal/jscreate": true}
	for _, dep := range strings.Fields(string(out)) {
		if (strings.HasPrefix(dep, module+"/") && !allowed[dep]) || strings.HasPrefix(dep, "github.com/nats-io/nats-server") {
			t.Errorf("hub/dcs depends on %s", dep)
		}
	}
}
