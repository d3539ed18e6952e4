// Command render writes the pgdr chart's manifests for each value set
// (deploy/kubernetes/pgdr/ci/*-values.yaml) into deploy/kubernetes/rendered/,
// as `helm template` renders them. Run it through deploy/kubernetes/render.sh.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/pgdr/pgdr/deploy/kubernetes/check"
)

func main() {
	chartDir := flag.String("chart", "../pgdr", "the chart's directory")
	out := flag.String("out", "../rendered", "where the rendered manifests go")
	flag.Parse()
	files, err := check.WriteRendered(*chartDir, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	for _, f := range files {
		fmt.Println("wrote", f)
	}
}
