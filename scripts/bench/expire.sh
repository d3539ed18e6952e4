#!/usr/bin/env bash
# make bench-expire: retention on a large S3 repository (issue 16's benchmark).
#
# A versitygw bucket (posix backend, started on 127.0.0.1 from the versitygw
# that `go install` puts in GOPATH/bin, installed when missing) is filled by
# scripts/bench/expirefill with BENCH_WAL (100,000) archived WAL objects and
# BENCH_BACKUPS (200) backups, one an hour: chains of a full backup
# (BENCH_FULL_FILES data objects, 1,000) and 3 incrementals (BENCH_INCR_FILES,
# 100), every manifest signed and listing its files. The filled data
# directory is kept under $PGDR_BENCH_DIR/expire/filled-* and reused by
# later runs with the same parameters (delete it to fill again); each run
# works on a copy of it (cp -a: the objects' xattrs come along; a minute or
# two for the 165,000 objects).
#
# Then the real binary runs, under /usr/bin/time -v, on a fresh copy:
#   pgdr-agent expire --keep-full 5 --pitr-window 1d --dry-run
#   pgdr-agent expire --keep-full 5 --pitr-window 1d
# (the window grows by the hours since the fill, when reused)
# which deletes about 87% of the WAL and 170 of the 200 backups. Printed:
# wall time and peak RSS of each against the targets (<= 60 s, <= 128 MiB),
# and what the run deleted. With BENCH_PROFILE=1 the agent also writes CPU
# profiles (PGDR_CPUPROFILE) next to the logs.
#
# pgBackRest is not run side by side: its expire needs a repository that
# pgBackRest itself wrote (backup.info, archive.info and its own manifests),
# and filling one with 200 backups of its format is not done here.
#
# Environment: PGDR_BENCH_DIR (/tmp/pgdr-bench), BENCH_WAL, BENCH_BACKUPS,
# BENCH_FULL_FILES, BENCH_INCR_FILES, BENCH_FILL_PARALLEL (32),
# BENCH_EXPIRE_ARGS (the retention flags above), BENCH_PROFILE, BENCH_AGENT
# (the pgdr-agent binary to measure, default bin/pgdr-agent: another
# build's, for a before/after).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench}/expire
NWAL=${BENCH_WAL:-100000}
NBACKUPS=${BENCH_BACKUPS:-200}
FULLF=${BENCH_FULL_FILES:-1000}
INCRF=${BENCH_INCR_FILES:-100}
FILLPAR=${BENCH_FILL_PARALLEL:-32}
EXPIRE_ARGS=${BENCH_EXPIRE_ARGS:-}
TARGET_WALL=60
TARGET_RSS_MIB=128
BUCKET=pgdr-bench
AGENT=${BENCH_AGENT:-bin/pgdr-agent}
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

say() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }

VGW_PID=""
stop_vgw() {
  [ -n "$VGW_PID" ] || return 0
  kill -9 -- "-$VGW_PID" 2>/dev/null || kill -9 "$VGW_PID" 2>/dev/null || true
  wait "$VGW_PID" 2>/dev/null || true
  VGW_PID=""
}
trap stop_vgw EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ prerequisites
[ -x bin/pgdr-agent ] || make build
GOBIN_DIR=$(go env GOPATH)/bin
VGW=$(command -v versitygw || true)
if [ -z "$VGW" ]; then
  VGW=$GOBIN_DIR/versitygw
  if [ ! -x "$VGW" ]; then
    say "installing versitygw (go install)"
    (cd /tmp && GOBIN=$GOBIN_DIR go install "github.com/versity/versitygw/cmd/versitygw@$(sed -n 's/^VERSITYGW_VERSION=//p' "$ROOT/scripts/ci-deps.sh")")
  fi
fi
mkdir -p "$BENCH/bin"
go build -o "$BENCH/bin/expirefill" ./scripts/bench/expirefill

# A port below the ephemeral range that nothing listens on.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port" >&2; return 1
}

ACCESS=pgdrbench
SECRET=pgdrbenchsecret0123456789
printf %s "$ACCESS" > "$BENCH/access"
printf %s "$SECRET" > "$BENCH/secret"
chmod 600 "$BENCH/access" "$BENCH/secret"

# start_vgw DIR: versitygw on DIR (the posix backend's root), in its own
# process group; waits until it answers.
start_vgw() {
  local dir=$1 dl
  PORT=$(free_port)
  ROOT_ACCESS_KEY_ID=$ACCESS ROOT_SECRET_ACCESS_KEY=$SECRET setsid "$VGW" --port "127.0.0.1:$PORT" --region us-east-1 --quiet \
    posix "$dir" >>"$BENCH/versitygw.log" 2>&1 &
  VGW_PID=$!
  dl=$((SECONDS + 30))
  until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do
    kill -0 "$VGW_PID" 2>/dev/null || { echo "versitygw exited; see $BENCH/versitygw.log" >&2; exit 1; }
    [ $SECONDS -lt $dl ] || { echo "versitygw did not answer within 30 s" >&2; exit 1; }
    sleep 0.1
  done
}

# Keys and the agent's configuration (written per run: the port changes).
[ -f "$BENCH/identity" ] || bin/pgdr-agent keygen -o "$BENCH/identity" > "$BENCH/recipient"
[ -f "$BENCH/signing.key" ] || bin/pgdr-agent keygen --signing -o "$BENCH/signing.key" > /dev/null
mkdir -p "$BENCH/pgdata"
write_config() {
  cat > "$BENCH/agent.yaml" <<EOF
cluster: bench
node: {name: bench}
postgres: {pgdata: $BENCH/pgdata}
repos:
  - name: s3
    url: s3://$BUCKET/pgdr
    s3: {endpoint: "http://127.0.0.1:$PORT", region: us-east-1, path_style: true, access_key_id_file: $BENCH/access, secret_access_key_file: $BENCH/secret}
encryption: {recipients: [$(cat "$BENCH/recipient")], identity_file: $BENCH/identity}
signing: {key_file: $BENCH/signing.key}
agent: {socket: $BENCH/agent.sock, log_level: info}
health: {listen: ""}
EOF
}

# ------------------------------------------------------------------ filling
FILLED=$BENCH/filled-w$NWAL-b$NBACKUPS-f$FULLF-i$INCRF
if [ ! -f "$FILLED/done" ]; then
  rm -rf "$FILLED"
  mkdir -p "$FILLED/root"
  start_vgw "$FILLED/root"
  write_config
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS:$SECRET" -H "x-amz-content-sha256: $EMPTY_SHA256" -X PUT "http://127.0.0.1:$PORT/$BUCKET" >/dev/null
  say "filling $FILLED: $NWAL WAL objects, $NBACKUPS backups ($FULLF / $INCRF data objects per full / incremental)"
  "$BENCH/bin/expirefill" --config "$BENCH/agent.yaml" --wal "$NWAL" --backups "$NBACKUPS" \
    --full-files "$FULLF" --incr-files "$INCRF" --parallel "$FILLPAR" | tee "$FILLED/fill.txt"
  stop_vgw
  date +%s > "$FILLED/done"
else
  say "reusing $FILLED ($(head -1 "$FILLED/fill.txt" 2>/dev/null))"
fi
# The backups are an hour apart up to the fill's time: the PITR window is
# a day plus the hours since then, so that a reused fill decides the same.
if [ -z "$EXPIRE_ARGS" ]; then
  EXPIRE_ARGS="--keep-full 5 --pitr-window $((24 + ($(date +%s) - $(cat "$FILLED/done")) / 3600))h"
fi

# -------------------------------------------------------------------- runs
# run_one NAME ARGS...: versitygw on the copy of the filled bucket,
# pgdr-agent expire under /usr/bin/time -v. The dry run changes nothing, so
# one copy serves both runs.
declare -A WALL RSS
WORK=$BENCH/work
say "copying the filled bucket to $WORK"
rm -rf "$WORK"
cp -a "$FILLED/root" "$WORK"
sync
run_one() {
  local name=$1; shift
  start_vgw "$WORK"
  write_config
  local prof=()
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then prof=(env "PGDR_CPUPROFILE=$BENCH/$name.cpu.pprof"); fi
  say "expire ($name): $EXPIRE_ARGS $*"
  local rc=0
  # shellcheck disable=SC2086
  "${prof[@]}" /usr/bin/time -v -o "$BENCH/$name.time" "$AGENT" expire --config "$BENCH/agent.yaml" $EXPIRE_ARGS "$@" \
    > "$BENCH/$name.out" 2> "$BENCH/$name.err" || rc=$?
  stop_vgw
  if [ $rc != 0 ]; then
    echo "expire ($name) failed (exit $rc):" >&2; tail -20 "$BENCH/$name.err" >&2; exit 1
  fi
  local wall rss
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$BENCH/$name.time" | awk -F: '{ s=0; for (i=1;i<=NF;i++) s=s*60+$i; print s }')
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$BENCH/$name.time")
  WALL[$name]=$wall
  RSS[$name]=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k/1024 }')
  head -1 "$BENCH/$name.out" >&2
}

run_one dry-run --dry-run
run_one real

verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "ok" : "OVER" }'; }
echo
echo "expire on versitygw: $NWAL WAL objects, $NBACKUPS backups ($(cat "$FILLED/fill.txt" | sed 's/.*(\([0-9]* data objects\)).*/\1/')), flags: $EXPIRE_ARGS"
printf '%-8s %10s %8s   %12s %8s\n' run "wall (s)" "<= $TARGET_WALL" "peak RSS MiB" "<= $TARGET_RSS_MIB"
for n in dry-run real; do
  printf '%-8s %10s %8s   %12s %8s\n' "$n" "${WALL[$n]}" "$(verdict "${WALL[$n]}" $TARGET_WALL)" "${RSS[$n]}" "$(verdict "${RSS[$n]}" $TARGET_RSS_MIB)"
done
echo "outputs: $BENCH/{dry-run,real}.{out,err,time}"
