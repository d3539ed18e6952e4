package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Commit are set at link time by the Makefile:
//
//	-ldflags "-X github.com/pgdr/pgdr/pkg/buildinfo.Version=v1.2.3
//	          -X github.com/pgdr/pgdr/pkg/buildinfo.Commit=<sha>"
//
// They are variables only so that the linker can set them; nothing in the
// program assigns them.
var (
	Version = "dev"
	Commit  = ""
)

// Info is the running build.
type Info struct {
	Version   string // the -X version, or the module version, or "dev"
	Commit    string // the -X commit, or the VCS revision, or "unknown"
	GoVersion string // the Go toolchain that built the binary
}

// Get returns the running build's identity.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					info.Commit = s.Value
				}
			}
		}
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// Line is the one-line answer of every program's version command:
// "PROGRAM VERSION (commit COMMIT, GOVERSION OS/ARCH)".
func Line(program string) string {
	info := Get()
	return program + " " + info.Version + " (commit " + info.Commit + ", " + info.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}

// Collector returns a collector serving pgdr_build_info{version, commit,
// goversion, program} = 1 for the running build; program names the binary
// (pgdr-agent, pgdr-coordinator).
func Collector(program string) prometheus.Collector {
	info := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgdr_build_info",
		Help: "Always 1; the running build (version, commit, Go version and program).",
		ConstLabels: prometheus.Labels{
			"version":   info.Version,
			"commit":    info.Commit,
			"goversion": info.GoVersion,
			"program":   program,
		},
	})
	g.Set(1)
	return g
}
