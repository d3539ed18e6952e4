#!/usr/bin/env bash
# Renders the pgdr chart (deploy/kubernetes/pgdr) for each value set in
# pgdr/ci/*-values.yaml into deploy/kubernetes/rendered/<set>.yaml, as
# `helm template pgdr ./pgdr -n pgdr -f pgdr/ci/<set>-values.yaml` renders
# it, with Helm's Go packages (check/cmd/render): no helm program needed.
# The check module's tests (make test) fail while these files are stale.
set -euo pipefail
cd "$(dirname "$0")/check"
go run ./cmd/render -chart ../pgdr -out ../rendered
