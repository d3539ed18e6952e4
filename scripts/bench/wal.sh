#!/usr/bin/env bash
# make bench-wal: WAL archiving benchmark, pgdr against pgBackRest and cp.
#
# Prints figures; asserts nothing. Everything runs on this machine, on
# 127.0.0.1, under $PGDR_BENCH_DIR (default /tmp/pgdr-bench), with a fresh
# PostgreSQL 15 data directory and a fresh local repository per mode.
#
# Phase 1, per-segment latency. A template cluster is made once per data
# set with archive_mode=on and an empty archive_command (PostgreSQL keeps
# every segment and marks it .ready but archives nothing), and a workload
# writes BENCH_SEGMENTS (default 120) real segments into it. The data sets
# (BENCH_DATA, default "pgbench hex"): pgbench (-i and runs of pgbench; its
# WAL compresses about 10:1) and hex (inserts of rows of md5() hex text;
# its WAL compresses about 2:1, so compression dominates a push). The
# measured ratio (zstd -3 of five segments) is printed. For each mode the
# template is copied, the copy started, the tool prepared (stanza-create,
# the agent daemon) and then archive_command is set with ALTER SYSTEM +
# reload. archive_command is a small wrapper that logs "<start_ns> <end_ns>
# <exit> <file>" per call. How the segments reach archive_command
# (BENCH_FEED, default "backlog drip"):
#   backlog  all segments are ready at once (a backlog: pgdr pushes ahead,
#            pgBackRest async works through its queue);
#   drip     one segment at a time: the .ready files are moved aside before
#            the copy starts and handed back one by one, each once the one
#            before is archived (.done), the archiver woken by a reload. No
#            tool can push ahead: this is archive_command's own latency, as
#            under a steady write load slower than archiving.
# Reported: p50/p99/max of the per-call durations, and for backlog the wall
# time from enabling archiving to the end of the last call (segments/s, the
# fairer throughput figure: with pgdr's push-ahead and pgBackRest's async
# mode many calls return at once because the file was already pushed).
# Every mode archives byte-identical segments. BENCH_ROUNDS (default 1)
# runs the modes that many times in turn (a, b, a, b: the machine's other
# load falls on all of them alike) and pools their calls.
#
# Phase 2, sustained archiving. A second template (pgbench -i -s BENCH_SCALE,
# archive_mode off) is copied per mode, archiving enabled, then
# pgbench -c BENCH_CLIENTS -T BENCH_SUSTAIN_SECONDS runs while the number of
# .ready files in pg_wal/archive_status is sampled every second. Reported:
# max and final .ready count, the time to drain the backlog after pgbench
# ends, pgbench tps and the WAL it wrote.
#
# Environment: PGDR_BENCH_DIR, BENCH_PORT (25433), BENCH_SEGMENTS (120),
# BENCH_SUSTAIN_SECONDS (60), BENCH_SCALE (10), BENCH_CLIENTS (4),
# BENCH_LAT_MODES / BENCH_SUS_MODES (space-separated subsets of the modes
# below; BENCH_SUS_MODES="" skips phase 2), BENCH_DATA, BENCH_FEED,
# BENCH_ROUNDS (see phase 1), BENCH_QUICK=1 (20 segments, 10 s sustain: a
# smoke run), BENCH_BASE_AGENT (another pgdr-agent binary, e.g. a build of
# an older commit: modes pgdr-base and pgdr-base-daemon are pgdr-oneshot
# and pgdr-daemon run with it, for a before/after comparison in one run). The one-segment-at-a-time comparison on WAL that compresses
# 2:1, quickly:
#   BENCH_DATA=hex BENCH_FEED=drip BENCH_SEGMENTS=30 BENCH_ROUNDS=3 \
#   BENCH_LAT_MODES="pgdr-oneshot pgbr-sync" BENCH_SUS_MODES="" make bench-wal
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25433}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  NSEG=${BENCH_SEGMENTS:-20}; SUSTAIN=${BENCH_SUSTAIN_SECONDS:-10}
else
  NSEG=${BENCH_SEGMENTS:-120}; SUSTAIN=${BENCH_SUSTAIN_SECONDS:-60}
fi
SCALE=${BENCH_SCALE:-10}
CLIENTS=${BENCH_CLIENTS:-4}
ALL_LAT="pgdr-base pgdr-oneshot pgdr-base-daemon pgdr-daemon pgdr-noenc pgbr-sync pgbr-sync-aes pgbr-async cp-fsync"
ALL_SUS="pgdr-oneshot pgdr-daemon pgbr-sync pgbr-async cp-fsync"
LAT_MODES=${BENCH_LAT_MODES-$ALL_LAT}
SUS_MODES=${BENCH_SUS_MODES-$ALL_SUS}
DATASETS=${BENCH_DATA:-pgbench hex}
FEEDS=${BENCH_FEED:-backlog drip}
ROUNDS=${BENCH_ROUNDS:-1}
for d in $DATASETS; do case $d in pgbench|hex) ;; *) echo "BENCH_DATA: unknown data set $d (pgbench, hex)" >&2; exit 2 ;; esac; done
for d in $FEEDS; do case $d in backlog|drip) ;; *) echo "BENCH_FEED: unknown feed $d (backlog, drip)" >&2; exit 2 ;; esac; done
RUN_START=$SECONDS

say() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
q() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAtX -c "$1"; }
now_ns() { echo "${EPOCHREALTIME/./}000"; }
nready() { find "$1/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l; }

# ---------------------------------------------------------------- clean-up
# Every PostgreSQL data directory and every daemon pid file this script
# starts is recorded here; the EXIT trap stops exactly those.
REG_PG="$BENCH.pgdata.list"
REG_PID="$BENCH.pid.list"
stop_pg() {
  local pgdata=$1
  if [ -f "$pgdata/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
}
stop_pidfile() {
  local pf=$1 pid dl
  [ -s "$pf" ] || return 0
  pid=$(head -1 "$pf" | tr -dc 0-9)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  dl=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $dl ]; do sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
# pgBackRest's async archiver is started by archive-push itself; it exits
# once its queue is empty. Its lock file (in this mode's own lock-path)
# names its pid: wait for it, and end it by that pid if it lingers.
stop_pgbr_async() {
  local lockdir=$1 conf f pid dl
  conf="$(dirname "$lockdir")/pgbackrest.conf"
  [ -d "$lockdir" ] || return 0
  for f in "$lockdir"/*.lock; do
    [ -f "$f" ] || continue
    pid=$(head -1 "$f" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] || continue
    dl=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $dl ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$conf"; then
      kill "$pid" 2>/dev/null || true
    fi
  done
}
BG_PIDS=()
cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$REG_PID" ]; then while read -r p; do stop_pidfile "$p"; done < "$REG_PID"; fi
  if [ -f "$REG_PG" ]; then while read -r p; do stop_pg "$p"; done < "$REG_PG"; fi
  if [ -d "$BENCH" ]; then for p in "$BENCH"/*/pgbr-lock; do [ -d "$p" ] && stop_pgbr_async "$p"; done; fi
  rm -f "$REG_PG" "$REG_PID"
}
# A previous run that was killed hard may have left servers behind.
cleanup
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ prerequisites
[ -x "$PGBIN/postgres" ] || bash scripts/ci-deps.sh
[ -x bin/pgdr-agent ] || make build
HAVE_PGBR=1
if ! command -v pgbackrest >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    say "installing pgbackrest (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null || true
  fi
  command -v pgbackrest >/dev/null 2>&1 || { HAVE_PGBR=0; say "pgbackrest missing: its rows are skipped"; }
fi
PGBR=$(command -v pgbackrest || echo pgbackrest)

rm -rf "$BENCH"
mkdir -p "$BENCH"
cp bin/pgdr-agent "$BENCH/pgdr-agent"
AGENT="$BENCH/pgdr-agent"
if [ -n "${BENCH_BASE_AGENT:-}" ]; then cp "$BENCH_BASE_AGENT" "$BENCH/pgdr-agent-base"; fi
[ "$(id -u)" = 0 ] && chown -R postgres: "$BENCH"
RECIPIENT=$(as_pg "$AGENT" keygen -o "$BENCH/identity.txt")
CIPHER_PASS=$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)
RESULTS="$BENCH/results.txt"

# ----------------------------------------------------------------- clusters
# start_cluster DIR PGDATA: starts PGDATA (owned by postgres) on
# 127.0.0.1:$PORT with its socket in DIR, waiting at most 60 s.
start_cluster() {
  local dir=$1 pgdata=$2
  echo "$pgdata" >> "$REG_PG"
  as_pg "$PGBIN/pg_ctl" -D "$pgdata" -l "$dir/postgres.log" -w -t 60 start >/dev/null
}
base_conf() { # base_conf DIR archive_mode
  cat <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$1'
archive_mode = $2
archive_command = ''
shared_buffers = '256MB'
max_wal_size = '2GB'
log_min_messages = warning
CONF
}
# mid_ready PGDATA N: the names of N ready segments from the middle of
# PGDATA's (not the first, after initdb, nor the last, padded by a switch).
mid_ready() {
  find "$1/pg_wal/archive_status" -name '0*.ready' -printf '%f\n' | sed 's/\.ready$//' | sort |
    awk -v n="$2" '{a[NR]=$0} END {s=int((NR-n)/2)+1; if (s<1) s=1; for (i=s; i<s+n && i<=NR; i++) print a[i]}'
}
seg_of_lsn() { q "select pg_walfile_name(pg_current_wal_lsn())"; }

declare -A LAT_N LAT_BYTES LAT_RATIO  # per data set

# make_lat_template DATA: NSEG ready segments of DATA's workload, nothing
# archived.
make_lat_template() {
  local data=$1 t1="$BENCH/template-lat-$1" n dl i=0 f in=0 out=0
  mkdir -p "$t1"; [ "$(id -u)" = 0 ] && chown postgres: "$t1"
  say "template $data: $NSEG segments of $data WAL (archive_command empty, so every segment stays .ready)"
  as_pg "$PGBIN/initdb" -D "$t1/pgdata" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
  base_conf "$t1" on | as_pg tee -a "$t1/pgdata/postgresql.conf" >/dev/null
  start_cluster "$t1" "$t1/pgdata"
  [ "$data" = hex ] && q "create table hex(id bigserial, a text, b text)" >/dev/null
  dl=$((SECONDS + 900))
  while :; do
    n=$(nready "$t1/pgdata")
    [ "$n" -ge $((NSEG - 1)) ] && break
    [ $SECONDS -lt $dl ] || { say "template $data: deadline reached with $n segments"; break; }
    i=$((i + 1))
    if [ "$data" = hex ]; then
      # About 100 000 rows a segment; random hex digits and little else.
      q "insert into hex(a, b) select md5(random()::text) || md5(random()::text) || md5(random()::text), md5(random()::text) from generate_series(1, 200000)" >/dev/null
    elif [ $((i % 2)) = 1 ]; then
      as_pg env PGHOST=127.0.0.1 PGPORT=$PORT "$PGBIN/pgbench" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1
    else
      as_pg env PGHOST=127.0.0.1 PGPORT=$PORT timeout 120 "$PGBIN/pgbench" -U postgres -n -c "$CLIENTS" -j 2 -T 5 postgres >/dev/null 2>&1
    fi
  done
  # One switch closes the segment being written, so exactly the listed files
  # are ready; then a clean stop.
  while [ "$(nready "$t1/pgdata")" -lt "$NSEG" ]; do
    q "select pg_switch_wal()" >/dev/null
    q "create table if not exists filler(x int); insert into filler select generate_series(1,1000)" >/dev/null
    [ $SECONDS -lt $dl ] || break
  done
  as_pg "$PGBIN/pg_ctl" -D "$t1/pgdata" -m fast -w -t 120 stop >/dev/null
  LAT_N[$data]=$(nready "$t1/pgdata")
  LAT_BYTES[$data]=$(find "$t1/pgdata/pg_wal/archive_status" -name '*.ready' -printf '%f\n' | sed 's/\.ready$//' |
    while read -r f; do stat -c %s "$t1/pgdata/pg_wal/$f"; done | awk '{s+=$1} END {print s+0}')
  # How well this WAL compresses: zstd -3 of five of its segments.
  LAT_RATIO[$data]="?"
  if command -v zstd >/dev/null 2>&1; then
    for f in $(mid_ready "$t1/pgdata" 5); do
      in=$((in + $(stat -c %s "$t1/pgdata/pg_wal/$f")))
      out=$((out + $(zstd -3 -q -c "$t1/pgdata/pg_wal/$f" | wc -c)))
    done
    [ "$out" -gt 0 ] && LAT_RATIO[$data]=$(awk -v a="$in" -v b="$out" 'BEGIN{printf "%.1f", a/b}')
  fi
  say "template $data: ${LAT_N[$data]} ready segments ($((LAT_BYTES[$data] / 1048576)) MiB) after $i workload runs; zstd -3 compresses it ${LAT_RATIO[$data]}:1"
}

make_sus_template() {
  # The pgbench tables, archive_mode off (no backlog).
  local t2="$BENCH/template-sus"
  mkdir -p "$t2"; [ "$(id -u)" = 0 ] && chown postgres: "$t2"
  say "template sustain: pgbench -i -s $SCALE, archive_mode off"
  as_pg "$PGBIN/initdb" -D "$t2/pgdata" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
  base_conf "$t2" off | as_pg tee -a "$t2/pgdata/postgresql.conf" >/dev/null
  start_cluster "$t2" "$t2/pgdata"
  as_pg env PGHOST=127.0.0.1 PGPORT=$PORT "$PGBIN/pgbench" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1
  q "checkpoint" >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$t2/pgdata" -m fast -w -t 120 stop >/dev/null
  as_pg sed -i 's/^archive_mode = off$/archive_mode = on/' "$t2/pgdata/postgresql.conf"
}

# --------------------------------------------------------------------- modes
# agent_of MODE: the pgdr-agent binary MODE runs; is_daemon MODE: whether
# MODE runs the agent daemon.
agent_of() { if [[ $1 == pgdr-base* ]]; then echo "$BENCH/pgdr-agent-base"; else echo "$AGENT"; fi; }
is_daemon() { [[ $1 == pgdr-daemon || $1 == pgdr-base-daemon ]]; }

# prepare_mode MODE DIR PGDATA: writes the tool's configuration and the
# timing wrapper DIR/archive.sh; echoes nothing.
prepare_mode() {
  local mode=$1 dir=$2 pgdata=$3 inner
  mkdir -p "$dir/repo"
  case $mode in
    pgdr-*)
      local enc
      if [ "$mode" = pgdr-noenc ]; then enc="encryption: {disabled: true}"
      else enc="encryption: {recipients: [\"$RECIPIENT\"], identity_file: $BENCH/identity.txt}"; fi
      cat > "$dir/agent.yaml" <<YAML
cluster: bench
node: {name: bench1, region: local}
postgres:
  pgdata: $pgdata
  bindir: $PGBIN
  dsn: "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
repos:
  - name: local
    url: file://$dir/repo
compression: {method: zstd, level: 3}
$enc
wal: {push_concurrency: 4, prefetch: 8}
agent: {socket: $dir/agent.sock, log_level: warn}
YAML
      inner="$(agent_of "$mode") wal-push --config $dir/agent.yaml \"\$1\""
      ;;
    pgbr-*)
      {
        echo "[global]"
        echo "repo1-path=$dir/repo"
        echo "log-path=$dir/pgbr-log"
        echo "lock-path=$dir/pgbr-lock"
        echo "spool-path=$dir/pgbr-spool"
        echo "compress-type=zst"
        echo "compress-level=3"
        echo "process-max=2"
        echo "log-level-console=warn"
        if [ "$mode" = pgbr-sync-aes ]; then
          echo "repo1-cipher-type=aes-256-cbc"
          echo "repo1-cipher-pass=$CIPHER_PASS"
        fi
        [ "$mode" = pgbr-async ] && echo "archive-async=y"
        echo "[bench]"
        echo "pg1-path=$pgdata"
        echo "pg1-port=$PORT"
        echo "pg1-socket-path=$dir"
      } > "$dir/pgbackrest.conf"
      chmod 600 "$dir/pgbackrest.conf"
      inner="$PGBR --config=$dir/pgbackrest.conf --stanza=bench archive-push \"\$1\""
      ;;
    cp-fsync)
      inner="cp \"\$1\" \"$dir/repo/\$2\" && sync \"$dir/repo/\$2\""
      ;;
    *) echo "unknown mode $mode" >&2; return 1 ;;
  esac
  cat > "$dir/archive.sh" <<SH
#!/bin/bash
# archive_command wrapper: times one call of the real command.
s=\${EPOCHREALTIME/./}
$inner
rc=\$?
e=\${EPOCHREALTIME/./}
printf '%s000 %s000 %s %s\n' "\$s" "\$e" "\$rc" "\$2" >> "$dir/calls.log"
exit \$rc
SH
  chmod 755 "$dir/archive.sh"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  return 0
}

# tool_up MODE DIR: what must run before archiving starts.
tool_up() {
  local mode=$1 dir=$2 dl
  case $mode in
    pgdr-daemon|pgdr-base-daemon)
      echo "$dir/agent.pid" >> "$REG_PID"
      as_pg "$(agent_of "$mode")" run --config "$dir/agent.yaml" --pid-file "$dir/agent.pid" > "$dir/agent.log" 2>&1 &
      dl=$((SECONDS + 20))
      until [ -S "$dir/agent.sock" ] && [ -s "$dir/agent.pid" ]; do
        [ $SECONDS -lt $dl ] || { say "daemon did not start: $(tail -3 "$dir/agent.log")"; return 1; }
        sleep 0.05
      done ;;
    pgbr-*)
      as_pg "$PGBR" --config="$dir/pgbackrest.conf" --stanza=bench stanza-create >"$dir/stanza.log" 2>&1 ||
        { say "stanza-create failed: $(tail -3 "$dir/stanza.log")"; return 1; } ;;
  esac
}
tool_down() {
  local mode=$1 dir=$2
  case $mode in
    pgdr-daemon|pgdr-base-daemon) stop_pidfile "$dir/agent.pid" ;;
    pgbr-async) stop_pgbr_async "$dir/pgbr-lock" ;;
  esac
}
enable_archiving() {
  q "alter system set archive_command = '$1/archive.sh %p %f'" >/dev/null
  q "select pg_reload_conf()" >/dev/null
}

# stats LOG: "n fails p50 p99 max mean first_start last_end" (ms, ns)
stats() {
  awk '{d=($2-$1)/1e6; print d, $3, $1, $2}' "$1" | sort -n | awk '
    {d[NR]=$1; if ($2!=0) f++; s+=$1; if (fs==""||$3<fs) fs=$3; if ($4>le) le=$4}
    END {
      if (NR==0) {print "0 0 - - - - 0 0"; exit}
      i50=int(NR*0.50); if (i50<NR*0.50) i50++; i99=int(NR*0.99); if (i99<NR*0.99) i99++
      printf "%d %d %.1f %.1f %.1f %.1f %s %s\n", NR, f+0, d[i50], d[i99], d[NR], s/NR, fs, le
    }'
}

declare -A R  # results, keyed "mode:field"

# run_latency MODE DATA FEED ROUND: one round of phase 1 for MODE; the
# calls of every round are pooled in DIR/calls.all.
run_latency() {
  local mode=$1 data=$2 feed=$3 round=$4 dir pgdata t0 dl n s f k st; dir="$BENCH/lat-$data-$feed-$mode"
  k="$mode/$data/$feed"; pgdata="$dir/pgdata"; st="$pgdata/pg_wal/archive_status"
  say "latency: $mode, $data WAL, $feed (${LAT_N[$data]} segments, round $round/$ROUNDS)"
  mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  rm -rf "$dir/repo" "$dir"/pgbr-* "$dir/held" "$dir/calls.log"
  cp -a "$BENCH/template-lat-$data/pgdata" "$pgdata"
  as_pg sed -i "s|^unix_socket_directories = .*|unix_socket_directories = '$dir'|" "$pgdata/postgresql.conf"
  if [ "$feed" = drip ]; then
    mkdir -p "$dir/held"
    find "$st" -name '*.ready' -exec mv {} "$dir/held/" \;
  fi
  prepare_mode "$mode" "$dir" "$pgdata"
  sync
  start_cluster "$dir" "$pgdata"
  if ! is_daemon "$mode"; then tool_up "$mode" "$dir" || { stop_pg "$pgdata"; return 0; }; fi
  t0=$(now_ns)
  if is_daemon "$mode"; then tool_up "$mode" "$dir" || { stop_pg "$pgdata"; return 0; }; fi
  enable_archiving "$dir"
  dl=$((SECONDS + 60 + LAT_N[$data] * 5))
  if [ "$feed" = drip ]; then
    # One segment at a time: hand its .ready back, wake the archiver (a
    # reload sets its latch), wait for .done.
    for f in $(ls "$dir/held" | sort); do
      mv "$dir/held/$f" "$st/$f"
      q "select pg_reload_conf()" >/dev/null
      until [ -e "$st/${f%.ready}.done" ] || [ $SECONDS -ge $dl ]; do sleep 0.02; done
    done
  fi
  while :; do
    n=$(nready "$pgdata")
    [ "$n" = 0 ] && break
    [ $SECONDS -lt $dl ] || { say "latency $mode: deadline, $n segments still ready"; R[$k:timeout]=$n; break; }
    sleep 0.1
  done
  read -r n n n n n n s f <<<"$(stats "$dir/calls.log")"
  if [ "$f" != 0 ]; then
    awk -v a="$t0" -v b="$f" 'BEGIN{printf "%.2f\n", (b-a)/1e9}' >> "$dir/walls"
  fi
  cat "$dir/calls.log" >> "$dir/calls.all" 2>/dev/null || true
  R[$k:repo]=$(du -sm "$dir/repo" | cut -f1)
  tool_down "$mode" "$dir"
  stop_pg "$pgdata"
  rm -rf "$pgdata"
  read -r "R[$k:n]" "R[$k:fail]" "R[$k:p50]" "R[$k:p99]" "R[$k:max]" "R[$k:mean]" s f <<<"$(stats "$dir/calls.all")"
  if [ -s "$dir/walls" ] && [ "$feed" = backlog ]; then
    R[$k:wall]=$(awk '{s+=$1} END{printf "%.2f", s/NR}' "$dir/walls")
    R[$k:segps]=$(awk -v n="${LAT_N[$data]}" -v w="${R[$k:wall]}" 'BEGIN{printf "%.1f", (w>0)?n/w:0}')
  fi
  say "  p50 ${R[$k:p50]} ms, p99 ${R[$k:p99]} ms, wall ${R[$k:wall]:-?} s, ${R[$k:segps]:-?} seg/s, fails ${R[$k:fail]} (all rounds so far)"
}

run_sustain() {
  local mode=$1 dir pgdata lsn0 lsn1 dl n mx last tps t1 sampler; dir="$BENCH/sus-$mode"
  pgdata="$dir/pgdata"
  say "sustain: $mode (pgbench -c $CLIENTS -T $SUSTAIN, scale $SCALE)"
  mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  cp -a "$BENCH/template-sus/pgdata" "$pgdata"
  as_pg sed -i "s|^unix_socket_directories = .*|unix_socket_directories = '$dir'|" "$pgdata/postgresql.conf"
  prepare_mode "$mode" "$dir" "$pgdata"
  sync
  start_cluster "$dir" "$pgdata"
  tool_up "$mode" "$dir" || { stop_pg "$pgdata"; return 0; }
  enable_archiving "$dir"
  lsn0=$(q "select pg_current_wal_lsn()")
  # Sample the .ready count every second (bounded), while pgbench runs.
  (
    sdl=$((SECONDS + SUSTAIN + 30))
    while [ $SECONDS -lt $sdl ]; do echo "$(nready "$pgdata")" >> "$dir/ready.samples"; sleep 1; done
  ) &
  sampler=$!; BG_PIDS+=("$sampler")
  as_pg env PGHOST=127.0.0.1 PGPORT=$PORT timeout $((SUSTAIN + 120)) "$PGBIN/pgbench" -U postgres -c "$CLIENTS" -j 2 -T "$SUSTAIN" postgres > "$dir/pgbench.out" 2>&1 || true
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  t1=$SECONDS
  last=$(nready "$pgdata")
  echo "$last" >> "$dir/ready.samples"
  lsn1=$(q "select pg_current_wal_lsn()")
  mx=$(sort -n "$dir/ready.samples" | tail -1)
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$dir/pgbench.out" | head -1)
  # Drain: how long until nothing is left ready (bounded).
  dl=$((SECONDS + 300))
  local d0; d0=$(now_ns)
  while :; do
    n=$(nready "$pgdata")
    [ "$n" = 0 ] && break
    [ $SECONDS -lt $dl ] || { R[$mode:sdrain]=">300"; break; }
    sleep 0.2
  done
  [ -n "${R[$mode:sdrain]:-}" ] || R[$mode:sdrain]=$(awk -v a="$d0" -v b="$(now_ns)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
  R[$mode:stps]=$(printf '%.0f' "${tps:-0}")
  R[$mode:swal]=$(q "select round(pg_wal_lsn_diff('$lsn1','$lsn0')/16777216.0, 1)")
  R[$mode:smax]=$mx
  R[$mode:send]=$last
  local s1
  read -r "R[$mode:sn]" "R[$mode:sfail]" "R[$mode:sp50]" "R[$mode:sp99]" s1 s1 s1 s1 <<<"$(stats "$dir/calls.log")"
  tool_down "$mode" "$dir"
  stop_pg "$pgdata"
  rm -rf "$pgdata"
  say "  tps ${R[$mode:stps]}, WAL ${R[$mode:swal]} segs, ready max $mx end $last, drain ${R[$mode:sdrain]} s"
}

# Where one push's time goes: each configuration archives the same 5
# segments (copied out of pg_wal, so nothing is pushed ahead) into a fresh
# repository, one process per file, no PostgreSQL involved.
run_diag() {
  local data=$1 d="$BENCH/diag-$1" f c yaml enc comp n=0 t="$BENCH/template-lat-$1"
  say "single-segment timings (no PostgreSQL), $data WAL"
  mkdir -p "$d/w"
  for f in $(mid_ready "$t/pgdata" 5); do
    cp "$t/pgdata/pg_wal/$f" "$d/w/$f"
  done
  for c in zstd3-age zstd3 none; do
    case $c in
      zstd3-age) comp=zstd; enc="encryption: {recipients: [\"$RECIPIENT\"]}" ;;
      zstd3) comp=zstd; enc="encryption: {disabled: true}" ;;
      none) comp=none; enc="encryption: {disabled: true}" ;;
    esac
    cat > "$d/$c.yaml" <<YAML
cluster: diag
node: {name: diag, region: local}
postgres: {pgdata: $t/pgdata, bindir: $PGBIN}
repos: [{name: local, url: "file://$d/repo-$c"}]
compression: {method: $comp, level: 3}
$enc
agent: {socket: $d/$c.sock, log_level: warn}
YAML
  done
  [ "$(id -u)" = 0 ] && chown -R postgres: "$d"
  # timed LABEL CMD...: wall ms (and user+sys ms when /usr/bin/time exists)
  timed() {
    local label=$1 s e; shift
    s=$(now_ns)
    if [ -x /usr/bin/time ]; then /usr/bin/time -f '%U %S' -o "$d/time.out" "$@" >/dev/null 2>>"$d/errors.log" || say "  $label failed: $(tail -1 "$d/errors.log")"
    else "$@" >/dev/null 2>>"$d/errors.log" || say "  $label failed: $(tail -1 "$d/errors.log")"; echo "- -" > "$d/time.out"; fi
    e=$(now_ns)
    echo "$label $(( (e - s) / 1000 )) $(awk '{ if ($1=="-") print "-"; else printf "%.0f", ($1+$2)*1000 }' "$d/time.out")" >> "$d/times"
  }
  local pg=()
  [ "$(id -u)" = 0 ] && pg=(runuser -u postgres --)
  for f in $(ls "$d/w"); do
    timed "pgdr-agent_version" "${pg[@]}" "$AGENT" version
    for c in zstd3-age zstd3 none; do timed "wal-push_$c" "${pg[@]}" "$AGENT" wal-push --config "$d/$c.yaml" "$d/w/$f"; done
    timed "cp+sync" "${pg[@]}" sh -c "cp '$d/w/$f' '$d/$f.copy' && sync '$d/$f.copy'"
  done
  DIAG+="  $data WAL (compresses ${LAT_RATIO[$data]}:1):"$'\n'
  DIAG+=$(sort -k1,1 -k2,2n "$d/times" | awk '
    function out() { if (k != "") printf "  %-28s wall median %6.1f ms (min %6.1f, max %6.1f), cpu user+sys mean %4.0f ms, %d runs\n", k, a[int((m+1)/2)]/1000, a[1]/1000, a[m]/1000, c/m, m }
    $1 != k { out(); k=$1; m=0; c=0 }
    { a[++m]=$2; c+=$3 }
    END { out() }')$'\n'
  printf '%s' "$DIAG" >&2
}

# ---------------------------------------------------------------------- run
machine() {
  echo "machine:    $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -m | awk '/^Mem:/{printf "%.1f GiB", $2/1024}') memory, kernel $(uname -r)"
  echo "disk:       $(df -hT "$BENCH" | awk 'NR==2{print $1" "$2", "$5" free"}') ($BENCH)"
  echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) ($1)"
}
{
  echo "pgdr WAL archiving benchmark — $(date -u +%FT%TZ)$([ "$QUICK" = 1 ] && echo '  [QUICK]')"
  machine "at start"
  echo "versions:   $("$AGENT" version), $("$PGBIN/postgres" --version), $([ $HAVE_PGBR = 1 ] && "$PGBR" version || echo 'pgBackRest missing'), $(cp --version | head -1)"
} > "$RESULTS.head"
cat "$RESULTS.head" >&2

for d in $DATASETS; do
  [ -n "$LAT_MODES" ] || break
  make_lat_template "$d"
  run_diag "$d"
  for feed in $FEEDS; do
    for r in $(seq "$ROUNDS"); do
      for m in $LAT_MODES; do
        [[ $m == pgbr-* && $HAVE_PGBR = 0 ]] && continue
        [[ $m == pgdr-base* && -z ${BENCH_BASE_AGENT:-} ]] && continue
        run_latency "$m" "$d" "$feed" "$r"
      done
    done
  done
done
[ -n "$SUS_MODES" ] && make_sus_template
for m in $SUS_MODES; do
  [[ $m == pgbr-* && $HAVE_PGBR = 0 ]] && continue
  run_sustain "$m"
done

# -------------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || a=="-" || b=="-" || b+0==0) print "n/a"; else printf "%.2f", a/b }'; }
label() {
  case $1 in
    pgdr-base) echo "pgdr one-shot, BENCH_BASE_AGENT" ;;
    pgdr-oneshot) echo "pgdr wal-push one-shot (zstd3+age)" ;;
    pgdr-daemon) echo "pgdr wal-push + daemon (zstd3+age)" ;;
    pgdr-base-daemon) echo "pgdr + daemon, BENCH_BASE_AGENT" ;;
    pgdr-noenc) echo "pgdr one-shot, encryption off" ;;
    pgbr-sync) echo "pgBackRest sync (zst)" ;;
    pgbr-sync-aes) echo "pgBackRest sync (zst+aes-256-cbc)" ;;
    pgbr-async) echo "pgBackRest async (zst, process-max 2)" ;;
    cp-fsync) echo "cp + sync" ;;
  esac
}
{
  cat "$RESULTS.head"
  echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at end; other work on this machine shares its $(nproc) CPUs)"
  for d in $DATASETS; do
    [ -n "${LAT_N[$d]:-}" ] || continue
    echo "phase 1:    $d: ${LAT_N[$d]} segments ($((LAT_BYTES[$d] / 1048576)) MiB) that zstd -3 compresses ${LAT_RATIO[$d]}:1"
  done
  echo "            feeds: backlog = all ready at once (wall = enabling archiving -> last call returned), drip = one segment at a time; $ROUNDS round(s) per mode, calls pooled"
  [ -n "$SUS_MODES" ] && echo "phase 2:    pgbench -c $CLIENTS -j 2 -T $SUSTAIN (scale $SCALE) while archiving; .ready files sampled every 1 s; drain = pgbench end -> 0 ready"
  echo
  echo "phase 1, per-call ms of archive_command (MiB = repository size):"
  printf '%-8s %-8s %-38s | %4s %4s %8s %8s %8s %8s %7s %6s %5s\n' "data" "feed" "mode" "n" "fail" "p50 ms" "p99 ms" "mean ms" "max ms" "wall s" "seg/s" "MiB"
  printf '%s\n' "$(printf '%.0s-' {1..124})"
  for d in $DATASETS; do
    for feed in $FEEDS; do
      for m in $ALL_LAT; do
        k="$m/$d/$feed"
        [ -n "${R[$k:n]:-}" ] || continue
        printf '%-8s %-8s %-38s | %4s %4s %8s %8s %8s %8s %7s %6s %5s\n' "$d" "$feed" "$(label "$m")" \
          "${R[$k:n]:--}" "${R[$k:fail]:--}" "${R[$k:p50]:--}" "${R[$k:p99]:--}" "${R[$k:mean]:--}" "${R[$k:max]:--}" "${R[$k:wall]:--}" "${R[$k:segps]:--}" "${R[$k:repo]:--}"
      done
    done
  done
  if [ -n "$SUS_MODES" ]; then
    echo
    echo "phase 2, under pgbench (rdy^ max .ready, rdy\$ .ready when pgbench ended, drain s, per-call p50/p99 under load):"
    printf '%-38s | %7s %6s %5s %5s %6s %7s %7s\n' "mode" "tps" "WALseg" "rdy^" "rdy$" "drain" "p50 ms" "p99 ms"
    printf '%s\n' "$(printf '%.0s-' {1..90})"
    for m in $ALL_SUS; do
      [ -n "${R[$m:stps]:-}" ] || continue
      printf '%-38s | %7s %6s %5s %5s %6s %7s %7s\n' "$(label "$m")" \
        "${R[$m:stps]:--}" "${R[$m:swal]:--}" "${R[$m:smax]:--}" "${R[$m:send]:--}" "${R[$m:sdrain]:--}" "${R[$m:sp50]:--}" "${R[$m:sp99]:--}"
    done
  fi
  echo
  echo "one segment, one process per call, no PostgreSQL (5 segments from the same WAL; pgdr-agent_version = process start-up alone):"
  printf '%s\n' "${DIAG:-  (not run)}"
  echo
  echo "ratios (phase 1 p50; drip: target pgdr one-shot / pgBackRest sync <= 1; backlog: issue 21's target <= 0.5):"
  for d in $DATASETS; do
    for feed in $FEEDS; do
      for a in pgdr-oneshot pgdr-base pgdr-daemon pgdr-base-daemon pgdr-noenc; do
        for b in pgbr-sync pgbr-sync-aes pgdr-base pgdr-base-daemon; do
          case $a:$b in pgdr-oneshot:pgdr-base|pgdr-daemon:pgdr-base-daemon|*:pgbr-*) ;; *) continue ;; esac
          [ -n "${R[$a/$d/$feed:p50]:-}" ] && [ -n "${R[$b/$d/$feed:p50]:-}" ] || continue
          printf '  %-7s %-7s %-14s p50 / %-14s p50 = %5s    throughput (seg/s) = %s\n' "$d" "$feed" "$a" "$b" \
            "$(ratio "${R[$a/$d/$feed:p50]:-}" "${R[$b/$d/$feed:p50]:-}")" "$(ratio "${R[$a/$d/$feed:segps]:-}" "${R[$b/$d/$feed:segps]:-}")"
        done
      done
    done
  done
  if [ -n "$SUS_MODES" ]; then
    echo "ratios under load (phase 2 per-call p50: segments arrive one at a time, so push-ahead rarely applies):"
    for a in pgdr-oneshot pgdr-daemon; do
      for b in pgbr-sync pgbr-async; do
        printf '  %-14s p50 / %-14s p50 = %5s\n' "$a" "$b" "$(ratio "${R[$a:sp50]:-}" "${R[$b:sp50]:-}")"
      done
    done
    echo "backlog ratios (phase 2, max .ready; lower is better; n/a = no backlog formed, WAL came slower than every tool archives it):"
    for a in pgdr-oneshot pgdr-daemon; do
      for b in pgbr-sync pgbr-async; do
        printf '  %-14s / %-12s max ready %s / %s = %s\n' "$a" "$b" "${R[$a:smax]:--}" "${R[$b:smax]:--}" "$(ratio "${R[$a:smax]:-}" "${R[$b:smax]:-}")"
      done
    done
  fi
  echo "total bench time: $((SECONDS - RUN_START)) s; raw call logs (calls.all) and tool logs in $BENCH/{lat,sus}-*/"
} > "$RESULTS"
rm -f "$RESULTS.head"
echo
cat "$RESULTS"
