#!/usr/bin/env bash
# make demo: a local lab on loopback with a file repository.
#
# Starts a PostgreSQL 15 server on 127.0.0.1 whose archive_command is
# pgdr-agent wal-push (with the agent daemon running), archives its WAL to an
# encrypted, compressed file repository, shows wal-list, fetches a segment
# back and checks it byte for byte, verifies the whole archive, takes a full
# and an incremental base backup, and restores to the moment before an
# "accidental" DELETE.
# Everything lives under $PGDR_DEMO_DIR (default /tmp/pgdr-demo) and is
# stopped at the end; pass --keep to leave the server and daemon running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=${PGDR_DEMO_DIR:-/tmp/pgdr-demo}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PGDR_DEMO_PORT:-25432}
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

[ -x "$PGBIN/postgres" ] || bash scripts/ci-deps.sh
[ -x bin/pgdr-agent ] || make build

if [ -f "$DEMO/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$DEMO/pgdata" -m immediate stop >/dev/null 2>&1 || true; fi
[ -f "$DEMO/agent.pid" ] && kill "$(cat "$DEMO/agent.pid")" 2>/dev/null || true
rm -rf "$DEMO"
mkdir -p "$DEMO/repo"
cp bin/pgdr-agent "$DEMO/pgdr-agent"
AGENT="$DEMO/pgdr-agent"
[ "$(id -u)" = 0 ] && chown -R postgres: "$DEMO"

cleanup() {
  if [ "$KEEP" = 0 ]; then
    [ -f "$DEMO/agent.pid" ] && kill "$(cat "$DEMO/agent.pid")" 2>/dev/null || true
    as_pg "$PGBIN/pg_ctl" -D "$DEMO/pgdata" -m fast -w stop >/dev/null 2>&1 || true
    [ -f "$DEMO/restored/pgdata/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$DEMO/restored/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step "1. An age identity for the repository (public recipient printed)"
RECIPIENT=$(as_pg "$AGENT" keygen -o "$DEMO/identity.txt")
echo "recipient: $RECIPIENT   identity: $DEMO/identity.txt (mode 0600)"

step "2. A PostgreSQL 15 server on 127.0.0.1:$PORT"
as_pg "$PGBIN/initdb" -D "$DEMO/pgdata" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
cat > "$DEMO/agent.yaml" <<YAML
cluster: demo
node: {name: pg-demo1, region: local}
postgres:
  pgdata: $DEMO/pgdata
  bindir: $PGBIN
  dsn: "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
repos:
  - name: local
    url: file://$DEMO/repo
compression: {method: zstd, level: 3}
encryption:
  recipients: ["$RECIPIENT"]
  identity_file: $DEMO/identity.txt
wal: {push_concurrency: 4, prefetch: 8}
agent: {socket: $DEMO/agent.sock, log_level: info}
YAML
cat >> "$DEMO/pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DEMO'
archive_mode = on
archive_command = '$AGENT wal-push --config $DEMO/agent.yaml %p'
wal_keep_size = '1GB'
CONF
[ "$(id -u)" = 0 ] && chown -R postgres: "$DEMO"
as_pg "$AGENT" config check --config "$DEMO/agent.yaml"
as_pg "$PGBIN/pg_ctl" -D "$DEMO/pgdata" -l "$DEMO/postgres.log" -w start >/dev/null
echo "archive_command = '$AGENT wal-push --config $DEMO/agent.yaml %p'"

step "3. The agent daemon (pushes ready WAL ahead; archive_command hands work to it)"
as_pg "$AGENT" run --config "$DEMO/agent.yaml" --pid-file "$DEMO/agent.pid" > "$DEMO/agent.log" 2>&1 &
for _ in $(seq 100); do [ -S "$DEMO/agent.sock" ] && [ -s "$DEMO/agent.pid" ] && break; sleep 0.1; done
echo "daemon pid $(cat "$DEMO/agent.pid"), log $DEMO/agent.log"

step "4. Some write load: pgbench -i -s 5, then three WAL switches"
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
as_pg env PGHOST=127.0.0.1 PGPORT=$PORT "$PGBIN/pgbench" -i -q -s 5 -U postgres postgres 2>&1 | tail -1
for _ in 1 2 3; do LAST=$(psql -qAtX -c "select pg_walfile_name(pg_switch_wal())"); done
echo "waiting until $LAST is archived..."
for _ in $(seq 600); do
  A=$(psql -qAtX -c "select coalesce(last_archived_wal,'') from pg_stat_archiver")
  [ "$A" \> "$LAST" ] || [ "$A" = "$LAST" ] && break
  sleep 0.1
done
psql -X -c "select archived_count, last_archived_wal, failed_count from pg_stat_archiver"

step "5. What the archive holds (pgdr-agent wal-list)"
"$AGENT" wal-list --config "$DEMO/agent.yaml"

step "6. Fetch $LAST back (restore_command's job) and compare with pg_wal"
"$AGENT" wal-fetch --config "$DEMO/agent.yaml" "$LAST" "$DEMO/fetched-$LAST"
cmp "$DEMO/fetched-$LAST" "$DEMO/pgdata/pg_wal/$LAST" && echo "identical: $(stat -c %s "$DEMO/fetched-$LAST") bytes; stored as $(stat -c %s "$DEMO/repo/demo/wal/00000001/$LAST") bytes (zstd + age)"

step "7. Read back and verify every archived object (pgdr-agent wal-verify)"
"$AGENT" wal-verify --config "$DEMO/agent.yaml" | tail -3

step "8. A full base backup, then rows, then an incremental (pgdr-agent backup)"
as_pg "$AGENT" backup --config "$DEMO/agent.yaml" --type full --progress=false
psql -qX -c "create table demo_orders(id int, note text); insert into demo_orders select g, 'before' from generate_series(1,1000) g"
as_pg "$AGENT" backup --config "$DEMO/agent.yaml" --type incr --progress=false
"$AGENT" backup-list --config "$DEMO/agent.yaml"

step "9. Point-in-time restore: just before an accidental delete"
BEFORE=$(psql -qAtX -c "select clock_timestamp()")
psql -qX -c "delete from demo_orders where id > 10"   # the accident
LAST=$(psql -qAtX -c "select pg_walfile_name(pg_switch_wal())")
for _ in $(seq 600); do
  A=$(psql -qAtX -c "select coalesce(last_archived_wal,'') from pg_stat_archiver")
  [ "$A" \> "$LAST" ] || [ "$A" = "$LAST" ] && break
  sleep 0.1
done
mkdir -p "$DEMO/restored" && [ "$(id -u)" = 0 ] && chown postgres: "$DEMO/restored"
RPORT=$((PORT + 1))
as_pg "$AGENT" restore --config "$DEMO/agent.yaml" --pgdata "$DEMO/restored/pgdata" \
  --target-time "$BEFORE" --target-action promote --no-archive \
  --start --port "$RPORT" --socket-dir "$DEMO"
echo "rows in demo_orders: primary $(psql -qAtX -c 'select count(*) from demo_orders'), restored $(psql -qAtX -p "$RPORT" -c 'select count(*) from demo_orders')"
as_pg "$PGBIN/pg_ctl" -D "$DEMO/restored/pgdata" -m fast -w stop >/dev/null

step "Done"
if [ "$KEEP" = 1 ]; then
  echo "Left running (--keep): PostgreSQL on 127.0.0.1:$PORT, daemon pid $(cat "$DEMO/agent.pid"). Files in $DEMO."
else
  echo "Stopping the server and the daemon. Files stay in $DEMO (run with --keep to leave them running)."
fi
