#!/usr/bin/env bash
# make bench-backup: base backup and restore benchmark, pgdr against
# pgBackRest and pg_basebackup.
#
# Prints figures; asserts nothing (the targets are printed next to the
# ratios). Everything runs on this machine, on 127.0.0.1, under
# $PGDR_BENCH_DIR (default /tmp/pgdr-bench-backup), on local disk with a warm
# page cache.
#
# Set-up: one PostgreSQL 15 server (initdb --data-checksums, autovacuum off so
# that both incrementals see the same changes), pgbench -i -s BENCH_SCALE
# loaded with archive_mode off, then restarted with archive_mode on and
# archive_command = a small wrapper that pushes each segment with
# `pgdr-agent wal-push` to pgdr's file repository and/or with
# `pgbackrest archive-push` to pgBackRest's repository. Which of the two it
# runs is read from $BENCH/archive.route on every call: "both" between
# measurements (so both archives stay complete), and only the measured tool's
# own push while that tool's backup runs, so each backup waits only for its
# own archiving. Before every measurement: CHECKPOINT, pg_switch_wal(), wait
# until the archiver has caught up, sync, and read the source (PGDATA or the
# repository) once so the page cache is warm.
#
# Measured (each BENCH_RUNS times, default 1, median reported):
#   full backup   pgdr-agent backup --type full (zstd BENCH_PGDR_LEVEL + age, --parallel nproc)
#                 pgbackrest --type=full backup (zst 3 + aes-256-cbc, process-max nproc, start-fast)
#                 pg_basebackup -Ft -X fetch --compress=client-zstd:level=3 -c fast
#   full restore  pgdr-agent restore --backup latest --pgdata DIR --parallel nproc (no --start)
#                 pgbackrest --pg1-path=DIR restore (process-max nproc)
#                 into an empty directory, deleted afterwards
#   incremental   after pgbench -c 4 -j 2 -T BENCH_INCR_SECONDS (60):
#                 pgdr --type incr, pgbackrest --type=incr
# Per measurement: wall time; throughput = sum(pg_database_size()) / wall;
# stored size = growth of the tool's backup directory (du --apparent-size,
# and disk blocks); user+sys CPU and max RSS of any one process
# (/usr/bin/time -v); peak RSS summed over the process tree (ps every 0.2 s;
# pgBackRest forks process-max workers).
#
# Diagnostics (BENCH_DIAG=1, default on): pgdr full backups with --parallel 1,
# at the other zstd level (1 when BENCH_PGDR_LEVEL is 3, else 3: klauspost's
# "fastest" mode against its default, with the stored size that goes with
# each), with encryption off, with compression and encryption off;
# pgBackRest with
# process-max 1; restores of the first full backup with --parallel 1 /
# process-max 1; pgdr's phase split (connect + checkpoint / copy / WAL wait +
# manifest) from its log.
#
# Environment: PGDR_BENCH_DIR, BENCH_PORT (25434), BENCH_SCALE (100),
# BENCH_INCR_SECONDS (60), BENCH_RUNS (1), BENCH_PARALLEL (nproc),
# BENCH_PGDR_LEVEL (3, pgdr's default: pgdr's compression.level, which maps
# to klauspost/compress levels: 1-2 fastest, 3-5 default),
# BENCH_DIAG (1), BENCH_QUICK=1 (scale 10, incremental after 10 s),
# BENCH_DATA (pgbench; mixed: pgbench's tables plus as many bytes of
# random text, about half the database, which compresses far less),
# BENCH_PROFILE=1 (pgdr's backups and restores write a CPU profile,
# logs/KEY.pprof: go tool pprof bin/pgdr-agent FILE).
#
# BENCH_MODE=chain (make bench-chain) measures the restore of a chain
# instead: see chain_bench below (BENCH_CHAIN incrementals, default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench-backup}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25434}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  SCALE=${BENCH_SCALE:-10}; INCR_SECS=${BENCH_INCR_SECONDS:-10}
else
  SCALE=${BENCH_SCALE:-100}; INCR_SECS=${BENCH_INCR_SECONDS:-60}
fi
RUNS=${BENCH_RUNS:-1}
LEVEL=${BENCH_PGDR_LEVEL:-3}
ALT_LEVEL=$([ "$LEVEL" = 3 ] && echo 1 || echo 3)
NPROC=$(nproc)
PAR=${BENCH_PARALLEL:-$NPROC}
DIAG=${BENCH_DIAG:-1}
MODE=${BENCH_MODE:-full}
DATA=${BENCH_DATA:-pgbench}
case "$DATA" in pgbench | mixed) ;; *) echo "BENCH_DATA=$DATA: want pgbench or mixed" >&2; exit 2 ;; esac
PROFILE=$([ "${BENCH_PROFILE:-0}" = 1 ] && echo 1 || true)
CLIENTS=4
RUN_START=$SECONDS

say() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
q() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAtX -c "$1"; }
now_ns() { echo "${EPOCHREALTIME/./}000"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b-a)/1e9}'; }

# ---------------------------------------------------------------- clean-up
# The one data directory this script starts and the sampler subshells are
# recorded; the EXIT trap stops exactly those.
REG_PG="$BENCH.pgdata.list"
stop_pg() {
  local pgdata=$1
  if [ -f "$pgdata/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
}
# A measurement in flight (its /usr/bin/time pid and its RSS sampler).
CUR_CMD=""; CUR_SAMPLER=""
tree_pids() { # tree_pids PID: PID and its descendants
  ps -e -o pid=,ppid= | awk -v r="$1" '
    { par[$1] = $2 }
    END {
      t[r] = 1
      do { ch = 0; for (x in par) if (!(x in t) && (par[x] in t)) { t[x] = 1; ch = 1 } } while (ch)
      for (x in t) print x
    }'
}
cleanup() {
  local p
  [ -n "$CUR_SAMPLER" ] && kill "$CUR_SAMPLER" 2>/dev/null || true
  if [ -n "$CUR_CMD" ]; then for p in $(tree_pids "$CUR_CMD"); do kill "$p" 2>/dev/null || true; done; fi
  if [ -f "$REG_PG" ]; then while read -r p; do stop_pg "$p"; done < "$REG_PG"; fi
  rm -f "$REG_PG"
  # The data directory and restored copies are large; the repositories and
  # logs stay for inspection.
  rm -rf "$BENCH"/restore-* "$BENCH"/basebackup-* "$BENCH/pgdata"
}
cleanup
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ prerequisites
[ -x "$PGBIN/postgres" ] || bash scripts/ci-deps.sh
[ -x bin/pgdr-agent ] || make build
if ! command -v pgbackrest >/dev/null 2>&1 || [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing pgbackrest and time (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest time >/dev/null || true
  fi
fi
command -v pgbackrest >/dev/null 2>&1 || { say "pgbackrest is missing (apt-get install pgbackrest)"; exit 1; }
[ -x /usr/bin/time ] || { say "/usr/bin/time is missing (apt-get install time)"; exit 1; }
PGBR=$(command -v pgbackrest)

rm -rf "$BENCH"
mkdir -p "$BENCH/logs" "$BENCH/repo-pgdr" "$BENCH/repo-pgbr" "$BENCH/pgbr-log" "$BENCH/pgbr-spool"
cp bin/pgdr-agent "$BENCH/pgdr-agent"
AGENT="$BENCH/pgdr-agent"
[ "$(id -u)" = 0 ] && chown -R postgres: "$BENCH"
PGDATA="$BENCH/pgdata"
RECIPIENT=$(as_pg "$AGENT" keygen -o "$BENCH/identity.txt")
CIPHER_PASS=$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)
RESULTS="$BENCH/results.txt"

# ------------------------------------------------------------ configuration
# agent.yaml: backups and restores (log level info: its log gives the phase
# split). archive.yaml: the same repository for wal-push, quieter. The noenc
# and plain variants (diagnostics) write backups to the same repository.
agent_yaml() { # agent_yaml LOGLEVEL COMPRESSION ENCRYPTION [LEVEL]
  cat <<YAML
cluster: bench
node: {name: bench1, region: local}
postgres:
  pgdata: $PGDATA
  bindir: $PGBIN
  dsn: "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
repos:
  - name: local
    url: file://$BENCH/repo-pgdr
compression: {method: $2, level: ${4:-$LEVEL}}
$3
wal: {push_concurrency: 4, prefetch: 8}
agent: {socket: $BENCH/agent.sock, log_level: $1}
YAML
}
ENC="encryption: {recipients: [\"$RECIPIENT\"], identity_file: $BENCH/identity.txt}"
agent_yaml info zstd "$ENC" > "$BENCH/agent.yaml"
agent_yaml warn zstd "$ENC" > "$BENCH/archive.yaml"
agent_yaml info zstd "$ENC" "$ALT_LEVEL" > "$BENCH/agent-alt.yaml"
agent_yaml info zstd "encryption: {disabled: true}" > "$BENCH/agent-noenc.yaml"
agent_yaml info none "encryption: {disabled: true}" > "$BENCH/agent-plain.yaml"
{
  echo "[global]"
  echo "repo1-path=$BENCH/repo-pgbr"
  echo "repo1-cipher-type=aes-256-cbc"
  echo "repo1-cipher-pass=$CIPHER_PASS"
  echo "repo1-retention-full=100"
  echo "log-path=$BENCH/pgbr-log"
  echo "lock-path=$BENCH/pgbr-lock"
  echo "spool-path=$BENCH/pgbr-spool"
  echo "compress-type=zst"
  echo "compress-level=3"
  echo "process-max=$PAR"
  echo "start-fast=y"
  echo "log-level-console=warn"
  echo "log-level-file=info"
  echo "[bench]"
  echo "pg1-path=$PGDATA"
  echo "pg1-port=$PORT"
  echo "pg1-socket-path=$BENCH"
} > "$BENCH/pgbackrest.conf"
chmod 600 "$BENCH/pgbackrest.conf"
PGBRC="--config=$BENCH/pgbackrest.conf"
# archive_command: pushes to the repositories named in archive.route (its
# name contains "pgbackrest": pgBackRest refuses an archive_command without).
cat > "$BENCH/archive-pgdr-pgbackrest.sh" <<SH
#!/bin/bash
route=\$(cat "$BENCH/archive.route" 2>/dev/null || echo both)
if [ "\$route" != pgbr ]; then "$AGENT" wal-push --config "$BENCH/archive.yaml" "\$1" || exit 1; fi
if [ "\$route" != pgdr ]; then "$PGBR" $PGBRC --stanza=bench archive-push "\$1" || exit 1; fi
exit 0
SH
chmod 755 "$BENCH/archive-pgdr-pgbackrest.sh"
echo both > "$BENCH/archive.route"
chmod 644 "$BENCH/archive.route"
[ "$(id -u)" = 0 ] && chown -R postgres: "$BENCH"

# --------------------------------------------------------------- the server
start_pg() {
  grep -qxF "$PGDATA" "$REG_PG" 2>/dev/null || echo "$PGDATA" >> "$REG_PG"
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH/postgres.log" -w -t 120 start >/dev/null
}
setup_server() {
  say "initdb --data-checksums; pgbench -i -s $SCALE (archive_mode off while loading)"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --data-checksums --no-sync -E UTF8 --locale=C >/dev/null
  as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BENCH'
archive_mode = off
archive_command = '$BENCH/archive-pgdr-pgbackrest.sh %p'
shared_buffers = '256MB'
max_wal_size = '4GB'
wal_keep_size = '1GB'
autovacuum = off
log_min_messages = warning
log_min_duration_statement = 100
CONF
  start_pg
  local t0=$SECONDS
  as_pg env PGHOST=127.0.0.1 PGPORT=$PORT timeout 1800 "$PGBIN/pgbench" -U postgres -i -q -s "$SCALE" postgres > "$BENCH/logs/pgbench-init.log" 2>&1
  say "  loaded in $((SECONDS - t0)) s"
  if [ "$DATA" = mixed ]; then
    # About as many bytes of random text as pgbench's tables hold: rows
    # of 256 hex digits (md5 of random numbers; no TOAST at this width),
    # which zstd compresses about 2:1 (against 20:1 for pgbench's).
    local db rows
    db=$(q "select pg_database_size('postgres')")
    rows=$((db / 300))
    say "BENCH_DATA=mixed: $rows rows of random text (table bench_text)"
    t0=$SECONDS
    q "create table bench_text (id int primary key, t text not null)" >/dev/null
    q "insert into bench_text select g, $(printf "md5(random()::text)||%.0s" {1..7})md5(random()::text) from generate_series(1, $rows) g" >/dev/null
    q "vacuum (freeze, analyze) bench_text" >/dev/null
    say "  loaded in $((SECONDS - t0)) s"
  fi
  q "checkpoint" >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop >/dev/null
  as_pg sed -i 's/^archive_mode = off$/archive_mode = on/' "$PGDATA/postgresql.conf"
  sync
  start_pg
  as_pg "$AGENT" config check --config "$BENCH/agent.yaml" > "$BENCH/logs/config-check.log" 2>&1 ||
    { say "pgdr config check failed:"; cat "$BENCH/logs/config-check.log" >&2; exit 1; }
  as_pg "$PGBR" $PGBRC --stanza=bench stanza-create > "$BENCH/logs/stanza-create.log" 2>&1 ||
    { say "pgbackrest stanza-create failed:"; cat "$BENCH/logs/stanza-create.log" >&2; exit 1; }
  # pgBackRest's check switches WAL and waits until it is archived: proves
  # the archive_command path for both tools.
  as_pg "$PGBR" $PGBRC --stanza=bench check > "$BENCH/logs/pgbr-check.log" 2>&1 ||
    { say "pgbackrest check failed:"; cat "$BENCH/logs/pgbr-check.log" >&2; exit 1; }
  DB_BYTES=$(q "select sum(pg_database_size(oid)) from pg_database")
  PGDATA_BYTES=$(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)
  say "  database $((DB_BYTES / 1048576)) MiB (sum of pg_database_size), PGDATA without pg_wal $((PGDATA_BYTES / 1048576)) MiB"
}

# settle ROUTE: archive only to ROUTE's repository from now on, flush what
# is pending through it, and sync the disk.
settle() {
  local route=$1 seg a dl
  echo "$route" > "$BENCH/archive.route"
  q "checkpoint" >/dev/null
  seg=$(q "select pg_walfile_name(pg_switch_wal())")
  dl=$((SECONDS + 300))
  while :; do
    a=$(q "select coalesce(last_archived_wal, '') from pg_stat_archiver")
    [[ "$a" > "$seg" || "$a" == "$seg" ]] && break
    [ $SECONDS -lt $dl ] || { say "archiver did not reach $seg in 300 s (last $a): $(q "select failed_count, last_failed_wal from pg_stat_archiver")"; break; }
    sleep 0.1
  done
  sync
}
warm() { find "$@" -type f -print0 2>/dev/null | xargs -0 -r cat > /dev/null 2>&1 || true; }

# ---------------------------------------------------------------- measuring
declare -A R # results: "key:field"

# tree_rss PID: summed RSS (kB) of PID's descendants, less the time and
# runuser wrappers.
tree_rss() {
  ps -e -o pid=,ppid=,rss=,comm= | awk -v r="$1" '
    { par[$1] = $2; rss[$1] = $3; cmd[$1] = $4 }
    END {
      t[r] = 1
      do { ch = 0; for (x in par) if (!(x in t) && (par[x] in t)) { t[x] = 1; ch = 1 } } while (ch)
      for (x in t) if (cmd[x] != "time" && cmd[x] != "runuser") s += rss[x]
      print s + 0
    }'
}

# measure KEY CMD...: runs CMD as postgres under /usr/bin/time -v while a
# sampler records the process tree's peak RSS. Sets R[KEY:wall|cpu|rss|
# tree|rc]; output in $BENCH/logs/KEY.{out,err,time}.
measure() {
  local key=$1; shift
  local lg="$BENCH/logs/$key" t0 t1 pid spid rc=0 pre=()
  [ "$(id -u)" = 0 ] && pre=(runuser -u postgres --)
  rm -f "$lg.peak"
  local logoff; logoff=$(stat -c %s "$BENCH/postgres.log" 2>/dev/null || echo 0)
  t0=$(now_ns)
  /usr/bin/time -v -o "$lg.time" "${pre[@]}" "$@" > "$lg.out" 2> "$lg.err" &
  pid=$!; CUR_CMD=$pid
  (
    peak=0; dl=$((SECONDS + 3600))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $dl ]; do
      s=$(tree_rss "$pid")
      if [ "$s" -gt "$peak" ]; then peak=$s; echo "$peak" > "$lg.peak"; fi
      sleep 0.2
    done
  ) &
  spid=$!; CUR_SAMPLER=$spid
  wait "$pid" || rc=$?
  t1=$(now_ns)
  CUR_CMD=""
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
  CUR_SAMPLER=""
  R[$key:rc]=$rc
  R[$key:wall]=$(secs "$t0" "$t1")
  # Server-side time of the slow backup functions (log_min_duration_statement).
  R[$key:pgfn]=$(tail -c +$((logoff + 1)) "$BENCH/postgres.log" 2>/dev/null |
    sed -n 's/.*duration: \([0-9.]*\) ms  [^:]*: .*\(pg_backup_start\|pg_backup_stop\|pg_switch_wal\|pg_create_restore_point\).*/\2 \1/p' |
    awk '{printf "%s%s %.2f s", (NR>1?", ":""), $1, $2/1000}')
  R[$key:cpu]=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.2f", u+s}' "$lg.time")
  R[$key:user]=$(awk -F': ' '/User time/{printf "%.2f", $2}' "$lg.time")
  R[$key:sys]=$(awk -F': ' '/System time/{printf "%.2f", $2}' "$lg.time")
  R[$key:rss]=$(awk -F': ' '/Maximum resident set size/{printf "%.0f", $2/1024}' "$lg.time")
  # The sampled sum can miss a short peak: never report less than the
  # largest single process.
  R[$key:tree]=$(awk -v m="${R[$key:rss]:-0}" '{v=$1/1024} END{v+=0; printf "%.0f", (v > m ? v : m)}' "$lg.peak" 2>/dev/null || echo "${R[$key:rss]:--}")
  if [ "$rc" != 0 ]; then
    R[$key:error]=$(tail -c 2000 "$lg.err")
    say "  $key FAILED (exit $rc) after ${R[$key:wall]} s:"
    tail -20 "$lg.err" >&2
  fi
  return 0
}
mib() { awk -v b="$1" 'BEGIN{ if (b == "" || b == "-") print "-"; else printf "%.1f", b/1048576 }'; }
rate() { awk -v b="$1" -v w="$2" 'BEGIN{ if (w == "" || w == "-" || w+0 == 0) print "-"; else printf "%.1f", b/1048576/w }'; }
# (printf %.0f: mawk prints integers from 2^31 up as 2.4e+09, and its %d
# stops at 2^31-1.)
dub() { { du -sb "$1" 2>/dev/null || true; } | awk '{b=$1} END{printf "%.0f\n", b+0}'; } # 0 when absent
duk() { { du -sk "$1" 2>/dev/null || true; } | awk '{b=$1*1024} END{printf "%.0f\n", b+0}'; }
ok() { [ "${R[$1:rc]:-1}" = 0 ]; }

PGDR_BK="$BENCH/repo-pgdr/bench/backup"
PGBR_BK="$BENCH/repo-pgbr/backup/bench"

# stored KEY DIR BEFORE_APPARENT BEFORE_DISK: growth of DIR.
stored() {
  R[$1:stored]=$(( $(dub "$2") - $3 ))
  R[$1:disk]=$(( $(duk "$2") - $4 ))
}

backup_pgdr() { # backup_pgdr KEY TYPE [CONFIG] [PARALLEL]
  local key=$1 typ=$2 cfg=${3:-$BENCH/agent.yaml} par=${4:-$PAR} b0 d0
  settle pgdr; warm "$PGDATA"
  b0=$(dub "$PGDR_BK"); d0=$(duk "$PGDR_BK")
  say "pgdr backup --type $typ --parallel $par ($(basename "$cfg"))  [$key]"
  measure "$key" env ${PROFILE:+PGDR_CPUPROFILE=$BENCH/logs/$key.pprof} "$AGENT" backup --config "$cfg" --type "$typ" --parallel "$par"
  stored "$key" "$PGDR_BK" "$b0" "$d0"
  R[$key:id]=$(sed -n 's/^backup \([^ ]*\) (.*complete.*/\1/p' "$BENCH/logs/$key.out" | head -1)
  phases_pgdr "$key"
  ok "$key" && say "  ${R[$key:wall]} s, stored $(mib "${R[$key:stored]}") MiB: $(cat "$BENCH/logs/$key.out")"
  settle both
}
backup_pgbr() { # backup_pgbr KEY TYPE [PROCESS_MAX]
  local key=$1 typ=$2 par=${3:-$PAR} b0 d0
  settle pgbr; warm "$PGDATA"
  b0=$(dub "$PGBR_BK"); d0=$(duk "$PGBR_BK")
  say "pgbackrest --type=$typ backup --process-max=$par  [$key]"
  measure "$key" "$PGBR" $PGBRC --stanza=bench --type="$typ" --process-max="$par" backup
  stored "$key" "$PGBR_BK" "$b0" "$d0"
  R[$key:id]=$(as_pg "$PGBR" $PGBRC --stanza=bench --output=json info 2>/dev/null |
    grep -o '"label":"[^"]*"' | tail -1 | cut -d'"' -f4 || true)
  phases_pgbr "$key"
  ok "$key" && say "  ${R[$key:wall]} s, stored $(mib "${R[$key:stored]}") MiB, label ${R[$key:id]}"
  settle both
}
backup_pgbb() { # backup_pgbb KEY
  local key=$1 dir="$BENCH/basebackup-$1"
  settle both; warm "$PGDATA"
  mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  say "pg_basebackup -Ft -X fetch --compress=client-zstd:level=3  [$key]"
  measure "$key" "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$dir" -Ft -X fetch \
    --compress=client-zstd:level=3 -c fast
  R[$key:stored]=$(dub "$dir"); R[$key:disk]=$(duk "$dir")
  ok "$key" && say "  ${R[$key:wall]} s, stored $(mib "${R[$key:stored]}") MiB"
  rm -rf "$dir"; sync
}
# restore_* KEY [BACKUP] [PARALLEL]: into an empty directory, then deleted.
restore_pgdr() {
  local key=$1 id=${2:-latest} par=${3:-$PAR} dir="$BENCH/restore-pgdr"
  rm -rf "$dir"; mkdir -m 700 "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  sync; warm "$BENCH/repo-pgdr"
  say "pgdr restore --backup $id --parallel $par  [$key]"
  measure "$key" env ${PROFILE:+PGDR_CPUPROFILE=$BENCH/logs/$key.pprof} "$AGENT" restore --config "$BENCH/agent.yaml" --backup "$id" --pgdata "$dir" --parallel "$par"
  R[$key:restored]=$(dub "$dir")
  ok "$key" && say "  ${R[$key:wall]} s, restored $(mib "${R[$key:restored]}") MiB: $(cat "$BENCH/logs/$key.out")"
  rm -rf "$dir"; sync
}
restore_pgbr() {
  local key=$1 set=${2:-latest} par=${3:-$PAR} dir="$BENCH/restore-pgbr" extra=()
  [ "$set" != latest ] && extra=(--set="$set")
  rm -rf "$dir"; mkdir -m 700 "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  sync; warm "$BENCH/repo-pgbr"
  say "pgbackrest restore --set $set --process-max=$par  [$key]"
  measure "$key" "$PGBR" $PGBRC --stanza=bench --pg1-path="$dir" --process-max="$par" "${extra[@]}" restore
  R[$key:restored]=$(dub "$dir")
  ok "$key" && say "  ${R[$key:wall]} s, restored $(mib "${R[$key:restored]}") MiB"
  rm -rf "$dir"; sync
}

# Where a backup's wall time goes. tsec TIMESTAMP: seconds since the epoch.
tsec() { date -d "$1" +%s.%N; }
# phases_pgdr KEY: from pgdr's log ("backup started" after pg_backup_start,
# "backup stopped" after pg_backup_stop, "backup complete" after its own
# check that the WAL is in the repository and the manifest) and the server's
# log (how long pg_backup_stop(false) took).
phases_pgdr() {
  local lg="$BENCH/logs/$1.err" s1 s2 s3 stop
  s1=$(sed -n 's/^time=\([^ ]*\) .*msg="backup started".*/\1/p' "$lg" | head -1)
  s2=$(sed -n 's/^time=\([^ ]*\) .*msg="backup stopped".*/\1/p' "$lg" | head -1)
  s3=$(sed -n 's/^time=\([^ ]*\) .*msg="backup complete".*/\1/p' "$lg" | head -1)
  [ -n "$s1" ] && [ -n "$s2" ] && [ -n "$s3" ] || return 0
  stop=$(sed -n 's/.*pg_backup_stop \([0-9.]*\) s.*/\1/p' <<<"${R[$1:pgfn]:-}")
  R[$1:phases]=$(awk -v w="${R[$1:wall]}" -v a="$(tsec "$s1")" -v b="$(tsec "$s2")" -v c="$(tsec "$s3")" -v st="${stop:-0}" \
    'BEGIN{printf "start+pg_backup_start %.2f | copy files %.2f | pg_backup_stop %.2f | WAL wait+manifest %.2f  (of %.2f s)", w-(c-a), b-a-st, st, c-b, w}')
}
# phases_pgbr KEY: from pgBackRest's log file (its last backup command).
phases_pgbr() {
  local lg="$BENCH/pgbr-log/bench-backup.log" blk b s1 s2 s3 e
  [ -f "$lg" ] || return 0
  blk=$(awk '/backup command begin/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$lg")
  at() { grep -m1 "$1" <<<"$blk" | cut -c1-23; }
  b=$(at "backup command begin"); s1=$(at "execute non-exclusive backup start"); s2=$(at "backup start archive =")
  s3=$(at "execute non-exclusive backup stop"); e=$(at "backup command end")
  [ -n "$b" ] && [ -n "$s1" ] && [ -n "$s2" ] && [ -n "$s3" ] && [ -n "$e" ] || return 0
  R[$1:phases]=$(awk -v w="${R[$1:wall]}" -v b="$(tsec "$b")" -v s1="$(tsec "$s1")" -v s2="$(tsec "$s2")" -v s3="$(tsec "$s3")" -v e="$(tsec "$e")" \
    'BEGIN{printf "start+checks %.2f | pg_backup_start %.2f | copy files %.2f | stop+WAL check+manifest+expire %.2f  (of %.2f s)", w-(e-b)+(s1-b), s2-s1, s3-s2, e-s3, w}')
}

median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.10g\n", (a[NR/2]+a[NR/2+1])/2 }'; }
# med PREFIX FIELD: median of R[PREFIX#i:FIELD] over the runs that succeeded.
med() {
  local i v=""
  for ((i = 1; i <= RUNS; i++)); do ok "$1#$i" && v+=" ${R[$1#$i:$2]:-}"; done
  echo "$v" | median
}
# runs PREFIX FIELD: every successful run's value, in run order; best
# PREFIX FIELD: the smallest.
runs() { local i v=""; for ((i = 1; i <= RUNS; i++)); do ok "$1#$i" && v+=" ${R[$1#$i:$2]:-}"; done; echo "${v# }"; }
best() { runs "$1" "$2" | tr ' ' '\n' | awk 'NF && (m == "" || $1 < m) {m = $1} END {print (m == "" ? "-" : m)}'; }
nok() { local i n=0; for ((i = 1; i <= RUNS; i++)); do ok "$1#$i" && n=$((n + 1)); done; echo "$n/$RUNS"; }

# Report helpers.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || a=="-" || b=="-" || b+0==0) print "n/a"; else printf "%.2f", a/b }'; }
cores() { awk -v c="$1" -v w="$2" 'BEGIN{ if (c=="-" || w=="-" || w+0==0) print "-"; else printf "%.2f", c/w }'; }
verdict() { # verdict VALUE OP TARGET...
  awk -v v="$1" -v op="$2" -v a="$3" -v b="${4:-}" 'BEGIN{
    if (v == "n/a") { print "n/a"; exit }
    if (op == ">=") m = (v >= a); else if (op == "<=") m = (v <= a); else m = (v >= a && v <= b)
    print (m ? "met" : "NOT met") }'
}
line() { printf '%s\n' "$(printf '%.0s-' {1..120})"; }

# -------------------------------------------------------------- chain mode
# BENCH_MODE=chain (make bench-chain): restore of a chain, full + BENCH_CHAIN
# (5) incrementals each after pgbench -T BENCH_INCR_SECONDS, by both tools
# from their own chain of the same database; then a pgdr full backup of the
# same data (after the last incremental) and its restore, against which
# the chain's restore is also compared. Restores run BENCH_RUNS times each,
# pgdr and pgBackRest alternating.
chain_bench() {
  local i n=${BENCH_CHAIN:-5} tps=() wal=()
  backup_pgdr "chain-full-pgdr" full
  backup_pgbr "chain-full-pgbr" full
  for ((i = 1; i <= n; i++)); do
    settle both
    say "chain: pgbench -c $CLIENTS -j 2 -T $INCR_SECS ($i/$n)"
    as_pg env PGHOST=127.0.0.1 PGPORT=$PORT timeout $((INCR_SECS + 120)) "$PGBIN/pgbench" -U postgres -n -c "$CLIENTS" -j 2 -T "$INCR_SECS" postgres > "$BENCH/logs/pgbench-chain-$i.log" 2>&1 || true
    tps+=("$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$BENCH/logs/pgbench-chain-$i.log" | head -1 | xargs printf '%.0f')")
    backup_pgdr "chain-incr$i-pgdr" incr
    backup_pgbr "chain-incr$i-pgbr" incr
  done
  local last_pgdr=${R[chain-incr$n-pgdr:id]:-latest} last_pgbr=${R[chain-incr$n-pgbr:id]:-latest}
  backup_pgdr "chain-same-pgdr" full
  for ((i = 1; i <= RUNS; i++)); do
    restore_pgdr "chain-restore-pgdr#$i" "$last_pgdr"
    restore_pgbr "chain-restore-pgbr#$i" "$last_pgbr"
    restore_pgdr "chain-fullrestore-pgdr#$i" "${R[chain-same-pgdr:id]:-latest}"
  done
  local cp cb cf
  cp=$(med chain-restore-pgdr wall); cb=$(med chain-restore-pgbr wall); cf=$(med chain-fullrestore-pgdr wall)
  {
    cat "$RESULTS.head"
    echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at end; other work on this machine shares its $NPROC CPUs)"
    echo "database:   pgbench scale $SCALE, $(mib "$DB_BYTES") MiB at the start; chain: full + $n incrementals, each after pgbench -c $CLIENTS -j 2 -T $INCR_SECS (tps ${tps[*]:-?}; autovacuum off)"
    echo "runs:       $RUNS per restore (median); page cache warm; sync before each"
    echo
    echo "CHAIN RESTORE (into an empty directory; no recovery run)"
    printf '%-52s | %4s | %7s | %9s | %6s %5s | %7s %8s\n' "tool" "ok" "wall s" "restored" "cpu s" "cores" "RSS max" "RSS tree"
    line
    for k in "chain-restore-pgdr:pgdr-agent restore (chain of $((n + 1)))" "chain-restore-pgbr:pgbackrest restore (chain of $((n + 1)))" \
             "chain-fullrestore-pgdr:pgdr-agent restore (full backup of the same data)"; do
      local w; w=$(med "${k%%:*}" wall)
      printf '%-52s | %4s | %7s | %9s | %6s %5s | %7s %8s\n' "${k#*:}" "$(nok "${k%%:*}")" "$w" "$(mib "$(med "${k%%:*}" restored)")" \
        "$(med "${k%%:*}" cpu)" "$(cores "$(med "${k%%:*}" cpu)" "$w")" "$(med "${k%%:*}" rss)" "$(med "${k%%:*}" tree)"
    done
    echo "  (each run, wall s: pgdr chain $(runs chain-restore-pgdr wall) | pgBackRest chain $(runs chain-restore-pgbr wall) | pgdr full $(runs chain-fullrestore-pgdr wall))"
    echo "  pgdr's output: $(cat "$BENCH/logs/chain-restore-pgdr#1.out" 2>/dev/null | tr '\n' ' ')"
    echo
    echo "STORED (MiB): pgdr full $(mib "${R[chain-full-pgdr:stored]:-}"), incrementals $(for ((i = 1; i <= n; i++)); do printf '%s ' "$(mib "${R[chain-incr$i-pgdr:stored]:-}")"; done)"
    echo "              pgBackRest full $(mib "${R[chain-full-pgbr:stored]:-}"), incrementals $(for ((i = 1; i <= n; i++)); do printf '%s ' "$(mib "${R[chain-incr$i-pgbr:stored]:-}")"; done)"
    echo
    echo "RATIOS"
    r=$(ratio "$cp" "$cb")
    printf '  pgdr chain / pgBackRest chain restore time   %6s   target <= 1.0   %s\n' "$r" "$(verdict "$r" "<=" 1.0)"
    r=$(ratio "$cp" "$cf")
    printf '  pgdr chain / pgdr full restore time          %6s   target <= 1.2   %s\n' "$r" "$(verdict "$r" "<=" 1.2)"
    printf '  best against best: %s, %s\n' "$(ratio "$(best chain-restore-pgdr wall)" "$(best chain-restore-pgbr wall)")" \
      "$(ratio "$(best chain-restore-pgdr wall)" "$(best chain-fullrestore-pgdr wall)")"
    echo
    echo "total bench time: $((SECONDS - RUN_START)) s; logs in $BENCH/logs/, repositories in $BENCH/repo-{pgdr,pgbr}/"
  } > "$RESULTS"
  rm -f "$RESULTS.head"
  echo
  cat "$RESULTS"
}

# ---------------------------------------------------------------------- run
machine() {
  echo "machine:    $NPROC CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -m | awk '/^Mem:/{printf "%.1f GiB", $2/1024}') memory, kernel $(uname -r)"
  echo "disk:       $(df -hT "$BENCH" | awk 'NR==2{print $1" "$2", "$5" used, "$4" free"}') ($BENCH)"
  echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) ($1)"
}
{
  echo "pgdr base backup / restore benchmark — $(date -u +%FT%TZ)$([ "$QUICK" = 1 ] && echo '  [QUICK]')"
  machine "at start"
  echo "versions:   $("$AGENT" version) (Go $(go env GOVERSION 2>/dev/null || echo '?')), $("$PGBIN/postgres" --version), $("$PGBR" version), $("$PGBIN/pg_basebackup" --version)"
} > "$RESULTS.head"
cat "$RESULTS.head" >&2

setup_server
if [ "$MODE" = chain ]; then chain_bench; exit 0; fi
for ((i = 1; i <= RUNS; i++)); do
  backup_pgdr "full-pgdr#$i" full
  backup_pgbr "full-pgbr#$i" full
  backup_pgbb "full-pgbb#$i"
done
FIRST_PGDR=${R[full-pgdr#1:id]:-latest}
FIRST_PGBR=${R[full-pgbr#1:id]:-latest}
for ((i = 1; i <= RUNS; i++)); do
  restore_pgdr "restore-pgdr#$i"
  restore_pgbr "restore-pgbr#$i"
done
TPS=(); WAL_MB=()
for ((i = 1; i <= RUNS; i++)); do
  settle both
  say "pgbench -c $CLIENTS -j 2 -T $INCR_SECS (archiving to both repositories)"
  lsn0=$(q "select pg_current_wal_lsn()")
  as_pg env PGHOST=127.0.0.1 PGPORT=$PORT timeout $((INCR_SECS + 120)) "$PGBIN/pgbench" -U postgres -n -c "$CLIENTS" -j 2 -T "$INCR_SECS" postgres > "$BENCH/logs/pgbench-$i.log" 2>&1 || true
  lsn1=$(q "select pg_current_wal_lsn()")
  TPS+=("$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$BENCH/logs/pgbench-$i.log" | head -1 | xargs printf '%.0f')")
  WAL_MB+=("$(q "select round(pg_wal_lsn_diff('$lsn1','$lsn0')/1048576.0)")")
  say "  tps ${TPS[-1]}, WAL ${WAL_MB[-1]} MiB"
  backup_pgdr "incr-pgdr#$i" incr
  backup_pgbr "incr-pgbr#$i" incr
done
if [ "$DIAG" = 1 ]; then
  say "diagnostics"
  backup_pgdr "diag-pgdr-p1" full "$BENCH/agent.yaml" 1
  backup_pgdr "diag-pgdr-alt" full "$BENCH/agent-alt.yaml"
  backup_pgdr "diag-pgdr-noenc" full "$BENCH/agent-noenc.yaml"
  backup_pgdr "diag-pgdr-plain" full "$BENCH/agent-plain.yaml"
  # Uncompressed, it is as large as the database: not kept.
  [ -n "${R[diag-pgdr-plain:id]:-}" ] && rm -rf "${PGDR_BK:?}/${R[diag-pgdr-plain:id]}"
  backup_pgbr "diag-pgbr-p1" full 1
  restore_pgdr "diag-restore-pgdr-p1" "$FIRST_PGDR" 1
  restore_pgbr "diag-restore-pgbr-p1" "$FIRST_PGBR" 1
  [ -n "${R[diag-pgdr-alt:id]:-}" ] && restore_pgdr "diag-restore-pgdr-alt" "${R[diag-pgdr-alt:id]}"
fi

# -------------------------------------------------------------------- report
row_full() { # row_full PREFIX LABEL
  local w; w=$(med "$1" wall)
  printf '%-44s | %4s | %7s %8s | %9s %9s | %6s %5s | %7s %8s\n' "$2" "$(nok "$1")" "$w" "$(rate "$DB_BYTES" "$w")" \
    "$(mib "$(med "$1" stored)")" "$(mib "$(med "$1" disk)")" "$(med "$1" cpu)" "$(cores "$(med "$1" cpu)" "$w")" \
    "$(med "$1" rss)" "$(med "$1" tree)"
}
row_restore() {
  local w; w=$(med "$1" wall)
  printf '%-44s | %4s | %7s %8s | %9s | %6s %5s | %7s %8s\n' "$2" "$(nok "$1")" "$w" "$(rate "$DB_BYTES" "$w")" \
    "$(mib "$(med "$1" restored)")" "$(med "$1" cpu)" "$(cores "$(med "$1" cpu)" "$w")" "$(med "$1" rss)" "$(med "$1" tree)"
}
row_incr() {
  local w; w=$(med "$1" wall)
  printf '%-44s | %4s | %7s | %9s %9s | %6s %5s | %7s %8s\n' "$2" "$(nok "$1")" "$w" \
    "$(mib "$(med "$1" stored)")" "$(mib "$(med "$1" disk)")" "$(med "$1" cpu)" "$(cores "$(med "$1" cpu)" "$w")" "$(med "$1" rss)" "$(med "$1" tree)"
}
row_diag() { # row_diag KEY LABEL
  local k=$1 what=stored
  [ -n "${R[$k:restored]:-}" ] && what=restored
  if ok "$k"; then
    printf '  %-52s %7s s %8s MiB/s  %-8s %8s MiB  cpu %6s s (%s cores)  RSS tree %5s MiB\n' "$2" "${R[$k:wall]}" \
      "$(rate "$DB_BYTES" "${R[$k:wall]}")" "$what" "$(mib "${R[$k:$what]:-}")" "${R[$k:cpu]}" "$(cores "${R[$k:cpu]}" "${R[$k:wall]}")" "${R[$k:tree]}"
  elif [ -n "${R[$k:rc]:-}" ]; then
    printf '  %-52s FAILED (exit %s)\n' "$2" "${R[$k:rc]}"
  fi
}
{
  cat "$RESULTS.head"
  echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at end; other work on this machine shares its $NPROC CPUs)"
  echo "database:   pgbench scale $SCALE$([ "$DATA" = mixed ] && echo ' + random text (BENCH_DATA=mixed)'), data checksums on, $(mib "$DB_BYTES") MiB = sum(pg_database_size) (PGDATA without pg_wal: $(mib "$PGDATA_BYTES") MiB); throughput = that / wall time"
  echo "settings:   pgdr zstd level $LEVEL + age, --parallel $PAR; pgBackRest zst 3 + aes-256-cbc, process-max $PAR, start-fast; pg_basebackup -Ft -X fetch client-zstd 3, -c fast (its tar includes the WAL)"
  echo "runs:       $RUNS per measurement (median of the successful ones; ok = successful/runs); page cache warm; sync before each"
  echo "RSS:        max = largest single process (/usr/bin/time -v); tree = peak of the summed RSS of the tool's processes (sampled every 0.2 s, at least max)"
  echo
  echo "FULL BACKUP"
  printf '%-44s | %4s | %7s %8s | %9s %9s | %6s %5s | %7s %8s\n' "tool" "ok" "wall s" "MiB/s" "stored" "disk" "cpu s" "cores" "RSS max" "RSS tree"
  line
  row_full full-pgdr "pgdr-agent backup --type full"
  row_full full-pgbr "pgbackrest --type=full backup"
  row_full full-pgbb "pg_basebackup -Ft -X fetch client-zstd:3"
  echo "(stored/disk MiB: growth of the backup directory, apparent size / disk blocks; RSS in MiB)"
  echo
  echo "FULL RESTORE (into an empty directory; no recovery run)"
  printf '%-44s | %4s | %7s %8s | %9s | %6s %5s | %7s %8s\n' "tool" "ok" "wall s" "MiB/s" "restored" "cpu s" "cores" "RSS max" "RSS tree"
  line
  row_restore restore-pgdr "pgdr-agent restore --backup latest"
  row_restore restore-pgbr "pgbackrest restore"
  echo
  echo "INCREMENTAL after pgbench -c $CLIENTS -j 2 -T $INCR_SECS (tps ${TPS[*]:-?}, WAL ${WAL_MB[*]:-?} MiB; autovacuum off)"
  printf '%-44s | %4s | %7s | %9s %9s | %6s %5s | %7s %8s\n' "tool" "ok" "wall s" "stored" "disk" "cpu s" "cores" "RSS max" "RSS tree"
  line
  row_incr incr-pgdr "pgdr-agent backup --type incr (page-level)"
  row_incr incr-pgbr "pgbackrest --type=incr backup (file-level)"
  echo
  echo "RATIOS (pgdr / pgBackRest)"
  r=$(ratio "$(med full-pgbr wall)" "$(med full-pgdr wall)")
  printf '  full backup throughput     %6s   target >= 1.5        %s\n' "$r" "$(verdict "$r" ">=" 1.5)"
  r=$(ratio "$(med restore-pgbr wall)" "$(med restore-pgdr wall)")
  printf '  full restore throughput    %6s   target >= 1.5        %s\n' "$r" "$(verdict "$r" ">=" 1.5)"
  printf '  (each run, wall s: backup pgdr %s | pgBackRest %s; restore pgdr %s | pgBackRest %s;\n' \
    "$(runs full-pgdr wall)" "$(runs full-pgbr wall)" "$(runs restore-pgdr wall)" "$(runs restore-pgbr wall)"
  printf '   restore system CPU s: pgdr %s | pgBackRest %s)\n' "$(runs restore-pgdr sys)" "$(runs restore-pgbr sys)"
  printf '  best run against best run: backup %s, restore %s (the fastest run of each tool: the least disturbed by the\n' \
    "$(ratio "$(best full-pgbr wall)" "$(best full-pgdr wall)")" "$(ratio "$(best restore-pgbr wall)" "$(best restore-pgdr wall)")"
  printf '   machine; a run far slower than the others shows in its system CPU time)\n'
  r=$(ratio "$(med full-pgdr stored)" "$(med full-pgbr stored)")
  printf '  full backup stored size    %6s   target 0.90 .. 1.10  %s\n' "$r" "$(verdict "$r" in 0.90 1.10)"
  printf '  backup peak RSS (tree)     %6s   (max single process: %s)\n' "$(ratio "$(med full-pgdr tree)" "$(med full-pgbr tree)")" "$(ratio "$(med full-pgdr rss)" "$(med full-pgbr rss)")"
  printf '  restore peak RSS (tree)    %6s   (max single process: %s)\n' "$(ratio "$(med restore-pgdr tree)" "$(med restore-pgbr tree)")" "$(ratio "$(med restore-pgdr rss)" "$(med restore-pgbr rss)")"
  printf '  backup CPU seconds         %6s   (user+sys s: pgdr %s+%s, pgBackRest %s+%s)\n' "$(ratio "$(med full-pgdr cpu)" "$(med full-pgbr cpu)")" \
    "$(med full-pgdr user)" "$(med full-pgdr sys)" "$(med full-pgbr user)" "$(med full-pgbr sys)"
  printf '  restore CPU seconds        %6s   (user+sys s: pgdr %s+%s, pgBackRest %s+%s)\n' "$(ratio "$(med restore-pgdr cpu)" "$(med restore-pgbr cpu)")" \
    "$(med restore-pgdr user)" "$(med restore-pgdr sys)" "$(med restore-pgbr user)" "$(med restore-pgbr sys)"
  printf '  incr time                  %6s   (lower is better)\n' "$(ratio "$(med incr-pgdr wall)" "$(med incr-pgbr wall)")"
  printf '  incr stored size           %6s   (lower is better)\n' "$(ratio "$(med incr-pgdr stored)" "$(med incr-pgbr stored)")"
  echo "  vs pg_basebackup: full backup throughput $(ratio "$(med full-pgbb wall)" "$(med full-pgdr wall)"), stored size $(ratio "$(med full-pgdr stored)" "$(med full-pgbb stored)")"
  echo
  echo "WHERE THE BACKUP TIME GOES (seconds, from each tool's log and the server's log_min_duration_statement)"
  for ((i = 1; i <= RUNS; i++)); do
    echo "  pgdr full #$i:       ${R[full-pgdr#$i:phases]:-(no log)}"
    echo "  pgBackRest full #$i: ${R[full-pgbr#$i:phases]:-(no log)}"
  done
  for ((i = 1; i <= RUNS; i++)); do
    echo "  pgdr incr #$i:       ${R[incr-pgdr#$i:phases]:-(no log)}"
    echo "  pgBackRest incr #$i: ${R[incr-pgbr#$i:phases]:-(no log)}"
  done
  echo "  (both call pg_backup_stop(false) and poll their repository for the last WAL segment; pgdr's \"pg_backup_stop\" phase is the"
  echo "   function alone. pgBackRest's start+checks includes its archive check: a restore point, a WAL switch and a wait.)"
  if [ "$DIAG" = 1 ]; then
    echo
    echo "DIAGNOSTICS (one run each; full backups of the same database after the incrementals)"
    row_diag "full-pgdr#1" "pgdr full, zstd$LEVEL+age, --parallel $PAR (main run)"
    row_diag diag-pgdr-p1 "pgdr full, zstd$LEVEL+age, --parallel 1"
    row_diag diag-pgdr-alt "pgdr full, zstd$ALT_LEVEL+age, --parallel $PAR"
    row_diag diag-pgdr-noenc "pgdr full, zstd$LEVEL, no encryption, --parallel $PAR"
    row_diag diag-pgdr-plain "pgdr full, no compression, no encryption"
    row_diag "full-pgbr#1" "pgBackRest full, zst3+aes, process-max $PAR (main run)"
    row_diag diag-pgbr-p1 "pgBackRest full, zst3+aes, process-max 1"
    row_diag "restore-pgdr#1" "pgdr restore, --parallel $PAR (main run)"
    row_diag diag-restore-pgdr-p1 "pgdr restore, --parallel 1"
    row_diag diag-restore-pgdr-alt "pgdr restore of the zstd$ALT_LEVEL backup, --parallel $PAR"
    row_diag "restore-pgbr#1" "pgBackRest restore, process-max $PAR (main run)"
    row_diag diag-restore-pgbr-p1 "pgBackRest restore, process-max 1"
    for k in diag-pgdr-p1 diag-pgdr-alt diag-pgdr-noenc diag-pgdr-plain; do
      [ -n "${R[$k:phases]:-}" ] && echo "  $k phases: ${R[$k:phases]}"
    done
    # The diagnostic full backups see the same database (after the
    # incrementals): the stored sizes compare.
    if ok diag-pgbr-p1; then
      echo "  stored size / pgBackRest's (diagnostic fulls, same database): zstd$LEVEL $(ratio "${R[diag-pgdr-p1:stored]:-}" "${R[diag-pgbr-p1:stored]}"), zstd$ALT_LEVEL $(ratio "${R[diag-pgdr-alt:stored]:-}" "${R[diag-pgbr-p1:stored]}")"
    fi
  fi
  fails=""
  for k in "${!R[@]}"; do [[ $k == *:error ]] && fails+="${k%:error} "; done
  if [ -n "$fails" ]; then
    echo
    echo "FAILURES"
    for k in $(echo "$fails" | tr ' ' '\n' | sort); do
      echo "  $k (exit ${R[$k:rc]}, ${R[$k:wall]} s):"
      printf '%s\n' "${R[$k:error]}" | sed 's/^/    | /' | tail -15
    done
  fi
  echo
  echo "total bench time: $((SECONDS - RUN_START)) s; logs in $BENCH/logs/, repositories in $BENCH/repo-{pgdr,pgbr}/"
} > "$RESULTS"
rm -f "$RESULTS.head"
echo
cat "$RESULTS"
