// Package check validates the pgdr Helm chart (deploy/kubernetes/pgdr)
// offline, with Helm's own Go packages rather than the helm program: the
// chart is linted as `helm lint --strict` does, rendered as `helm template`
// does, and every rendered document is decoded strictly into its
// k8s.io/api type and held to pgdr's deployment policy (probes, non-root,
// quorum-keeping disruption budget, zone spread, resource requests). The
// configuration files the chart generates are parsed with pgdr's own
// configuration parsers.
//
// It is a module of its own so that Helm and the k8s.io modules stay out of
// pgdr's main module. cmd/render writes deploy/kubernetes/rendered/ (see
// deploy/kubernetes/render.sh); the tests fail when those files are stale.
package check
