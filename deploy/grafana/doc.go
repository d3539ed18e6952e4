// Package grafana holds the pgdr Grafana dashboard (pgdr.json) and a
// provisioning example. Its code reads the names of the series a PromQL
// expression selects, and the metrics catalogue (docs/metrics.md) and
// recording rules (deploy/prometheus) they must come from; the package's
// test checks every query of the dashboard against them.
package grafana
