#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, skipping what is present:
# PostgreSQL 15 server binaries (Debian's postgresql-15), systemd-analyze,
# groff and zsh (deploy/systemd, pkg/clidoc), HAProxy (the example
# configuration in deploy/haproxy is checked with haproxy -c), Chromium (the
# coordinators' status page is rendered in headless Chromium by
# coordinator/e2e), promtool (the rules and configurations in
# deploy/prometheus are checked and unit-tested with it) and versitygw (an S3
# server, via go install). Safe to run
# repeatedly.
set -euo pipefail
PG_BIN=/usr/lib/postgresql/15/bin
VERSITYGW_VERSION=v1.8.0

need_apt=()
[ -x "$PG_BIN/postgres" ] || need_apt+=(postgresql-15)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# systemd-analyze verifies the units in deploy/systemd; groff and zsh check
# the generated man pages and zsh completion (pkg/clidoc); dpkg-deb (dpkg,
# always there) builds the .deb that deploy/packaging installs.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "ci-deps: installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# Debian's package starts a cluster of its own; the tests make their own.
if id postgres >/dev/null 2>&1; then :; else
  echo "ci-deps: the postgres user is missing (install postgresql-15)" >&2; exit 1
fi

# promtool alone, from Debian's prometheus package: installing the package
# would start a Prometheus server (its postinst), so the .deb is downloaded and
# only /usr/bin/promtool is extracted, into PROMTOOL_DIR (default /usr/local/bin).
PROMTOOL_DIR=${PROMTOOL_DIR:-/usr/local/bin}
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$PROMTOOL_DIR/promtool" ]; then
  echo "ci-deps: extracting promtool from Debian's prometheus package into $PROMTOOL_DIR"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
  tmp=$(mktemp -d)
  # apt-get download writes into the current directory; _apt must be able to.
  chmod 755 "$tmp"
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  $SUDO install -D -m 0755 "$tmp/x/usr/bin/promtool" "$PROMTOOL_DIR/promtool"
  rm -rf "$tmp"
fi

gobin="$(go env GOPATH)/bin"
if ! command -v versitygw >/dev/null 2>&1 && [ ! -x "$gobin/versitygw" ]; then
  echo "ci-deps: installing versitygw $VERSITYGW_VERSION"
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
echo "ci-deps: PostgreSQL 15, systemd-analyze, groff, zsh, HAProxy, Chromium, promtool and versitygw present"
