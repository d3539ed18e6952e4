// Package buildinfo says which build of pgdr is running: the version and
// commit the Makefile sets with -ldflags -X (the commit falls back to the
// VCS revision the Go toolchain stamps into the binary), and a Prometheus
// collector serving them as pgdr_build_info, and the line the programs'
// version commands print (Line).
package buildinfo
