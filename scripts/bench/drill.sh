#!/usr/bin/env bash
# make bench-drill: a restore drill (pgdr-agent drill) timed phase by phase,
# and pgBackRest restoring the same data and WAL side by side.
#
# Prints figures; asserts nothing. Everything runs on this machine, on
# 127.0.0.1, under $PGDR_BENCH_DIR (default /tmp/pgdr-bench-drill).
#
# Set-up: one PostgreSQL 15 server (initdb --data-checksums), pgbench -i -s
# BENCH_SCALE (100) loaded with archive_mode off, restarted with
# archive_mode on and an archive_command pushing every segment with
# `pgdr-agent wal-push` to pgdr's file repository and with `pgbackrest
# archive-push` to pgBackRest's. A full backup by each tool, then pgbench -c
# 4 -j 2 -T BENCH_WAL_SECONDS (300) of WAL, switched and archived.
#
# Measured:
#   pgdr   pgdr-agent drill --backup latest --json --parallel nproc: its own
#          split (fetch/write = the restore's files, replay = start until
#          promoted at the end of the archive, checks = pg_amcheck
#          --heapallindexed + row counts), from its JSON.
#   pgBR   pgbackrest restore (process-max nproc) into an empty directory
#          (= fetch/write), then pg_ctl start until pg_is_in_recovery() is
#          false (= replay: archive-get of each segment and replay, promoted at
#          the end of the archive), then pg_amcheck --all --heapallindexed
#          (= the same amcheck the drill runs).
#
# Environment: PGDR_BENCH_DIR, BENCH_PORT (25436), BENCH_SCALE (100),
# BENCH_WAL_SECONDS (300), BENCH_PARALLEL (nproc), BENCH_QUICK=1 (scale 10,
# 20 s of pgbench).
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench-drill}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25436}
RPORT=$((PORT + 1))
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  SCALE=${BENCH_SCALE:-10}; WAL_SECS=${BENCH_WAL_SECONDS:-20}
else
  SCALE=${BENCH_SCALE:-100}; WAL_SECS=${BENCH_WAL_SECONDS:-300}
fi
PAR=${BENCH_PARALLEL:-$(nproc)}

say() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
q() { "$PGBIN/psql" -h "$BENCH" -p "${2:-$PORT}" -U postgres -d postgres -qAtX -c "$1"; }
now_ns() { echo "${EPOCHREALTIME/./}000"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b-a)/1e9}'; }

PGDATA="$BENCH/pgdata"
RDIR="$BENCH/restore-pgbr"
stop_pg() { [ -f "$1/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate -w -t 30 stop >/dev/null 2>&1 || true; }
cleanup() {
  stop_pg "$RDIR"; stop_pg "$PGDATA"
  rm -rf "$RDIR" "$PGDATA" "$BENCH"/drill-scratch
}
[ -d "$BENCH" ] && cleanup
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$PGBIN/postgres" ] || bash scripts/ci-deps.sh
[ -x bin/pgdr-agent ] || make build
command -v pgbackrest >/dev/null 2>&1 || { say "pgbackrest is missing (apt-get install pgbackrest)"; exit 1; }
PGBR=$(command -v pgbackrest)

rm -rf "$BENCH"
mkdir -p "$BENCH/logs" "$BENCH/repo-pgdr" "$BENCH/repo-pgbr" "$BENCH/pgbr-log" "$BENCH/pgbr-spool"
cp bin/pgdr-agent "$BENCH/pgdr-agent"
AGENT="$BENCH/pgdr-agent"
[ "$(id -u)" = 0 ] && chown -R postgres: "$BENCH"
RECIPIENT=$(as_pg "$AGENT" keygen -o "$BENCH/identity.txt")
CIPHER_PASS=$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)
cat > "$BENCH/agent.yaml" <<YAML
cluster: bench
node: {name: bench1, region: local}
postgres:
  pgdata: $PGDATA
  bindir: $PGBIN
  dsn: "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
repos:
  - name: local
    url: file://$BENCH/repo-pgdr
compression: {method: zstd, level: 3}
encryption: {recipients: ["$RECIPIENT"], identity_file: $BENCH/identity.txt}
wal: {push_concurrency: 4, prefetch: 8}
agent: {socket: $BENCH/agent.sock, log_level: warn}
YAML
cat > "$BENCH/pgbackrest.conf" <<CONF
[global]
repo1-path=$BENCH/repo-pgbr
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$CIPHER_PASS
repo1-retention-full=100
log-path=$BENCH/pgbr-log
lock-path=$BENCH/pgbr-lock
spool-path=$BENCH/pgbr-spool
compress-type=zst
compress-level=3
process-max=$PAR
start-fast=y
log-level-console=warn
[bench]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$BENCH
CONF
chmod 600 "$BENCH/pgbackrest.conf"
PGBRC="--config=$BENCH/pgbackrest.conf"
cat > "$BENCH/archive-pgdr-pgbackrest.sh" <<SH
#!/bin/bash
"$AGENT" wal-push --config "$BENCH/agent.yaml" "\$1" || exit 1
"$PGBR" $PGBRC --stanza=bench archive-push "\$1" || exit 1
SH
chmod 755 "$BENCH/archive-pgdr-pgbackrest.sh"
[ "$(id -u)" = 0 ] && chown -R postgres: "$BENCH"

say "initdb --data-checksums; pgbench -i -s $SCALE"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --data-checksums --no-sync -E UTF8 --locale=C >/dev/null
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BENCH'
archive_mode = off
archive_command = '$BENCH/archive-pgdr-pgbackrest.sh %p'
shared_buffers = '256MB'
max_wal_size = '4GB'
log_min_messages = warning
CONF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH/postgres.log" -w -t 120 start >/dev/null
as_pg env PGHOST="$BENCH" PGPORT=$PORT "$PGBIN/pgbench" -U postgres -i -q -s "$SCALE" postgres > "$BENCH/logs/pgbench-init.log" 2>&1
q "checkpoint" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop >/dev/null
as_pg sed -i 's/^archive_mode = off$/archive_mode = on/' "$PGDATA/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH/postgres.log" -w -t 120 start >/dev/null
as_pg "$PGBR" $PGBRC --stanza=bench stanza-create > "$BENCH/logs/stanza-create.log" 2>&1
DB_BYTES=$(q "select sum(pg_database_size(oid)) from pg_database")

say "full backups: pgdr, pgBackRest"
as_pg "$AGENT" backup --config "$BENCH/agent.yaml" --type full --parallel "$PAR" > "$BENCH/logs/backup-pgdr.log" 2>&1
as_pg "$PGBR" $PGBRC --stanza=bench --type=full backup > "$BENCH/logs/backup-pgbr.log" 2>&1

say "pgbench -c 4 -j 2 -T $WAL_SECS (WAL for the drills to replay)"
LSN0=$(q "select pg_current_wal_lsn()")
as_pg env PGHOST="$BENCH" PGPORT=$PORT "$PGBIN/pgbench" -U postgres -c 4 -j 2 -T "$WAL_SECS" postgres > "$BENCH/logs/pgbench.log" 2>&1
WAL_BYTES=$(q "select pg_current_wal_lsn() - '$LSN0'::pg_lsn")
SEG=$(q "select pg_walfile_name(pg_switch_wal())")
dl=$((SECONDS + 600))
until a=$(q "select coalesce(last_archived_wal, '') from pg_stat_archiver"); [[ "$a" > "$SEG" || "$a" == "$SEG" ]]; do
  [ $SECONDS -lt $dl ] || { say "archiver did not reach $SEG"; exit 1; }
  sleep 0.2
done
say "  $(awk -v b="$WAL_BYTES" 'BEGIN{printf "%.0f", b/1048576}') MiB of WAL archived"
sync

say "pgdr-agent drill --backup latest --parallel $PAR"
mkdir -p "$BENCH/drill-scratch"; [ "$(id -u)" = 0 ] && chown postgres: "$BENCH/drill-scratch"
t0=$(now_ns)
rc=0
"$AGENT" drill --config "$BENCH/agent.yaml" --backup latest --parallel "$PAR" --scratch "$BENCH/drill-scratch/s" --json \
  > "$BENCH/logs/drill.json" 2> "$BENCH/logs/drill.err" || rc=$?
t1=$(now_ns)
[ "$rc" = 0 ] || { say "drill exit $rc:"; cat "$BENCH/logs/drill.json" "$BENCH/logs/drill.err" >&2; }
j() { python3 -c "import json,sys; d=json.load(open('$BENCH/logs/drill.json')); print($1)"; }
D_FETCH=$(j "'%.1f' % d['timings']['fetch_write_seconds']")
D_REPLAY=$(j "'%.1f' % d['timings']['replay_seconds']")
D_CHECKS=$(j "'%.1f' % d['timings']['checks_seconds']")
D_AMCHECK=$(j "'%.1f' % d['amcheck']['seconds']")
D_TOTAL=$(j "'%.1f' % d['timings']['total_seconds']")
D_RPO=$(j "'%.1f' % d['rpo']['seconds']")
D_OK=$(j "d['ok']")

say "pgbackrest restore --process-max=$PAR, start, replay, pg_amcheck"
mkdir -m 700 "$RDIR"; [ "$(id -u)" = 0 ] && chown postgres: "$RDIR"
t0=$(now_ns)
as_pg "$PGBR" $PGBRC --stanza=bench --pg1-path="$RDIR" --process-max="$PAR" restore > "$BENCH/logs/restore-pgbr.log" 2>&1
t1=$(now_ns)
B_FETCH=$(secs "$t0" "$t1")
as_pg tee -a "$RDIR/postgresql.auto.conf" >/dev/null <<CONF
port = $RPORT
unix_socket_directories = '$BENCH'
archive_mode = off
CONF
t0=$(now_ns)
as_pg "$PGBIN/pg_ctl" -D "$RDIR" -l "$BENCH/restore-pgbr.log" -w -t 3600 start >/dev/null
dl=$((SECONDS + 3600))
until [ "$(q "select pg_is_in_recovery()" "$RPORT" 2>/dev/null)" = f ]; do
  [ $SECONDS -lt $dl ] || { say "pgBackRest's restore did not leave recovery"; exit 1; }
  sleep 0.05
done
t1=$(now_ns)
B_REPLAY=$(secs "$t0" "$t1")
t0=$(now_ns)
as_pg "$PGBIN/pg_amcheck" -h "$BENCH" -p "$RPORT" -U postgres --all --heapallindexed --install-missing --jobs "$PAR" > "$BENCH/logs/amcheck-pgbr.log" 2>&1 || true
t1=$(now_ns)
B_AMCHECK=$(secs "$t0" "$t1")
stop_pg "$RDIR"

echo
echo "drill at scale $SCALE ($(awk -v b="$DB_BYTES" 'BEGIN{printf "%.0f", b/1048576}') MiB), $WAL_SECS s of pgbench ($(awk -v b="$WAL_BYTES" 'BEGIN{printf "%.0f", b/1048576}') MiB of WAL), parallel $PAR, $(nproc) CPUs"
printf '%-28s %10s %10s %10s %10s\n' "" "fetch/write" "replay" "amcheck" "total"
printf '%-28s %10s %10s %10s %10s\n' "pgdr-agent drill (ok $D_OK)" "$D_FETCH" "$D_REPLAY" "$D_AMCHECK" "$D_TOTAL"
printf '%-28s %10s %10s %10s %10s\n' "pgbackrest restore + start" "$B_FETCH" "$B_REPLAY" "$B_AMCHECK" "$(awk -v a="$B_FETCH" -v b="$B_REPLAY" -v c="$B_AMCHECK" 'BEGIN{printf "%.1f", a+b+c}')"
echo "drill checks (amcheck + row counts): $D_CHECKS s; RPO figure $D_RPO s (last replayed commit against the drill's start)"
