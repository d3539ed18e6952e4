// Package prometheus holds pgdr's Prometheus set-up: the regional scrape
// configurations (file and Kubernetes service discovery), the global
// configuration federating them, the recording and alert rules, and their
// promtool unit tests (tests/). It has no Go code of its own; its tests check
// the files with promtool and hold the rules to the metrics catalogue
// (docs/metrics.md) and the runbooks (docs/runbooks/). See README.md.
package prometheus
