package cli

import (
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// version is set at link time (-ldflags "-X
// github.com/fleethub/fleethub/internal/cli.version=v1.2.3") by a release
// build; otherwise Version reads the build information Go records.
var version string

// Version is the program's version: the link-time version, else the
// module version (a go install of a tagged release), else the VCS
// revision the binary was built from (with "+dirty" for uncommitted
// changes), else "devel".
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel-" + rev
	if modified == "true" {
		v += "+dirty"
	}
	return strings.TrimSpace(v)
}

// BuildInfo is the metric fleethub_build_info{version,goversion}, always
// 1: what a dashboard joins on to show which build each process runs.
func BuildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "fleethub", Name: "build_info",
		Help:        "Always 1; the labels say which build this process runs.",
		ConstLabels: prometheus.Labels{"version": Version(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
