package runbook

import (
	"embed"
	"fmt"
	"path"
)

//go:embed builtin/*.yaml
var builtinFS embed.FS

// builtinFiles are the shipped runbooks, in the order Builtin lists them.
var builtinFiles = []string{"regional-evacuation.yaml", "regional-failback.yaml"}

// Builtin returns the runbooks pgdr ships (docs/runbooks/): a fresh copy
// each call. They are parsed and validated by the package's tests, so a
// failure here is a build defect and panics.
func Builtin() []Runbook {
	out := make([]Runbook, 0, len(builtinFiles))
	for _, f := range builtinFiles {
		data, err := builtinFS.ReadFile(path.Join("builtin", f))
		if err != nil {
			panic(fmt.Sprintf("runbook: embedded %s: %v", f, err))
		}
		rb, err := Parse(data)
		if err != nil {
			panic(fmt.Sprintf("runbook: embedded %s: %v", f, err))
		}
		out = append(out, rb)
	}
	return out
}

// BuiltinText returns the YAML text of the shipped runbook name, as
// embedded (a run keeps the text it started with).
func BuiltinText(name string) ([]byte, bool) {
	for _, f := range builtinFiles {
		if f == name+".yaml" {
			data, err := builtinFS.ReadFile(path.Join("builtin", f))
			return data, err == nil
		}
	}
	return nil, false
}
