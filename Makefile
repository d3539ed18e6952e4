# pgdr — make targets. See README.md.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -X github.com/pgdr/pgdr/pkg/buildinfo.Version=$(VERSION) \
             -X github.com/pgdr/pgdr/pkg/buildinfo.Commit=$(COMMIT)
GOTESTFLAGS ?= -race -count=1 -timeout 40m

.PHONY: all build dist test unit lint demo bench-wal bench-backup bench-chain bench-coordinator bench-failover bench-commitgate bench-drill bench-expire clean proto

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pgdr-agent ./agent/cmd/pgdr-agent
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pgdr-coordinator ./coordinator/cmd/pgdr-coordinator
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pgdrctl ./coordinator/cmd/pgdrctl

# dist: release archives and .deb packages for linux/amd64 and linux/arm64
# under dist/, with SHA256SUMS (scripts/dist.sh; DIST_ARCHES to narrow).
dist:
	GO="$(GO)" VERSION="$(VERSION)" COMMIT="$(COMMIT)" bash scripts/dist.sh

# test: lint, then every package's tests — unit tests and the integration
# tests that run real PostgreSQL 15 and a real versitygw S3 server
# (scripts/test.sh: the slowest coordinator/e2e tests in a second go test
# alongside).
# scripts/ci-deps.sh installs what a fresh machine lacks.
test: lint
	bash scripts/ci-deps.sh
	GO="$(GO)" GOTESTFLAGS="$(GOTESTFLAGS)" bash scripts/test.sh

# unit: the fast tests only (no PostgreSQL, no S3 server).
unit:
	$(GO) test -race -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# demo: the local lab (scripts/lab.sh) and a guided tour of it; the lab is
# stopped at the end unless PGDR_DEMO_KEEP=1. lab-up / lab-down start and stop
# the lab alone (PGDR_LAB_DIR, default /tmp/pgdr-lab; PGDR_LAB_PORT_BASE).
demo: build
	bash scripts/demo.sh

lab-up: build
	bash scripts/lab.sh up

lab-down:
	bash scripts/lab.sh down

bench-wal: build
	bash scripts/bench/wal.sh

bench-backup: build
	bash scripts/bench/backup.sh

# bench-drill: pgdr-agent drill's time split against pgBackRest restoring the
# same data and WAL (scripts/bench/drill.sh).
bench-drill: build
	bash scripts/bench/drill.sh

# bench-chain: restore of a chain (full + 5 incrementals, each after
# pgbench -T 60), pgdr against pgBackRest and pgdr's own full restore.
bench-chain: build
	BENCH_MODE=chain bash scripts/bench/backup.sh

bench-coordinator: build
	bash scripts/bench/coordinator.sh

# bench-failover: unplanned failover and switchover, pgdr against Patroni 3.0 +
# etcd 3.4 (installed from Debian when missing; runs as root). BENCH_REPS (5).
bench-failover: build
	bash scripts/bench/failover.sh

# bench-commitgate: TPS and latency of lease-gated commits against async
# commits (pgbench -c 4 -T 20, median of 3; BENCH_SECONDS, BENCH_RUNS).
bench-commitgate:
	bash scripts/bench/commitgate.sh

# bench-expire: expire --dry-run and the real run on a versitygw bucket holding
# 100,000 WAL objects and 200 backups (wall time and peak RSS against <= 60 s,
# <= 128 MiB). The filled bucket is kept under PGDR_BENCH_DIR and reused.
bench-expire: build
	bash scripts/bench/expire.sh

clean:
	rm -rf $(BIN) dist

# proto: regenerate proto/pgdr/v1/*.pb.go. protoc comes from Debian's
# protobuf-compiler; the two Go plugins are installed here at pinned versions.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	cd proto && PATH=$(GOBIN_DIR):$$PATH protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		pgdr/v1/*.proto
