#!/usr/bin/env bash
# make demo: a guided tour of pgdr on the local lab (scripts/lab.sh).
#
# Starts the lab — 3 coordinators (Raft), a PostgreSQL 15 primary pg-a1 and
# two streaming replicas pg-a2 (us-east-1) and pg-b1 (eu-west-1) (coordinators
# one per region: us-east-1, eu-west-1, us-west-2), an agent
# next to each — and walks through it step by step: status, the status page
# (its URL and how to open it) and members, the
# agents' HTTP probes, a write seen on the replicas, maintenance mode and the
# history, the encrypted WAL archive, a full and an incremental base backup, a
# point-in-time restore to just before an "accidental" DELETE, and the
# coordinator leader killed with kill -9 and replaced by a new one.
#
# Everything lives under $PGDR_LAB_DIR (default /tmp/pgdr-lab); the lab is
# stopped at the end unless PGDR_DEMO_KEEP=1 (or --keep) is given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PGDR_LAB_DIR=${PGDR_LAB_DIR:-/tmp/pgdr-lab}
LAB=${PGDR_LAB_DIR%/}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
KEEP=${PGDR_DEMO_KEEP:-0}
[ "${1:-}" = "--keep" ] && KEEP=1
LABSH="bash $ROOT/scripts/lab.sh"
export PGOPTIONS="-c client_min_messages=warning"

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
say() { printf '\033[2m   %s\033[0m\n' "$@"; }
# run shows a command, then runs it.
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }
# run_pg: run, as the postgres user when root (it reads PGDATA).
run_pg() { printf '\033[36m$ %s\033[0m\n' "$*"; as_pg "$@"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
port() { $LABSH port "$@"; }
# sql NODE QUERY: one value from a lab server.
sql() { "$PGBIN/psql" -h 127.0.0.1 -p "$(port pg "$1")" -U postgres -d postgres -qAtX -c "$2"; }
# wait_until SECONDS WHAT CMD...: run CMD (a function or program, evaluated
# afresh on every try — never pass a "$(...)" whose value is fixed at the call)
# every 0.2s until it succeeds; after SECONDS fail, printing what was awaited
# and the last output CMD gave. Deadlines are sized for a cold, loaded 2-core
# machine (PGDR_DEMO_WAIT_SCALE multiplies them).
WAIT_SCALE=${PGDR_DEMO_WAIT_SCALE:-1}
wait_until() {
  local secs=$(( $1 * WAIT_SCALE )) what=$2 last="" deadline
  shift 2
  deadline=$(( $(date +%s) + secs ))
  while :; do
    if last=$("$@" 2>&1); then return 0; fi
    [ "$(date +%s)" -ge "$deadline" ] && break
    sleep 0.2
  done
  echo "demo: timed out after ${secs}s waiting for $what" >&2
  echo "demo: last check: $* -> ${last:-<no output>}" >&2
  return 1
}
# rows_are NODE TABLE N: TABLE on NODE has exactly N rows (prints the count).
rows_are() {
  local c
  c=$(sql "$1" "select count(*) from $2" 2>&1) || { echo "$c"; return 1; }
  echo "$c rows"
  [ "$c" = "$3" ]
}
# archived WALFILE: the primary's archiver has archived WALFILE (or later).
archived() {
  local a
  a=$(sql pg-a1 "select coalesce(last_archived_wal,'') from pg_stat_archiver")
  [ -n "$a" ] && { [ "$a" \> "$1" ] || [ "$a" = "$1" ]; }
}
status_json() { pgdrctl status --json --timeout 3s 2>/dev/null; }
leader() { status_json | jq -r '.coordinators[] | select(.leader) | .name'; }
all_healthy() {
  status_json | jq -e '(.clusters[] | select(.name == "main") | .members | length == 3 and all(.[]; .healthy))' >/dev/null
}
new_leader_besides() { local l; l=$(leader) && [ -n "$l" ] && [ "$l" != "$1" ]; }
coordinator_back() { # NAME: the restarted coordinator answers as a follower
  curl -fsS "http://127.0.0.1:$(port http "$1")/health" | jq -e '.leader != "" and .raft_state == "Follower"'
}

finish() {
  local rc=$?
  if [ -f "$LAB/restored/pgdata/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$LAB/restored/pgdata" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ "$rc" != 0 ]; then
    echo "demo: failed (exit $rc). Logs are under $LAB (*/coordinator.log, */agent.log, */postgres.log)." >&2
  fi
  if [ "$KEEP" = 1 ]; then
    echo
    bold "The lab is left running (PGDR_DEMO_KEEP=1): source $LAB/env, then pgdrctl status. Stop it with: scripts/lab.sh down"
  else
    echo
    $LABSH down || true
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

step "0. The lab: scripts/lab.sh up"
say "3 coordinators c1 (us-east-1), c2 (eu-west-1) and c3 (us-west-2) form a Raft cluster over TLS and" \
  "a gossip pool. pg-a1 is a PostgreSQL 15 primary; pg-a2 (us-east-1) and pg-b1 (eu-west-1)" \
  "are streaming replicas made with pg_basebackup -R. Next to each server runs pgdr-agent:" \
  "it checks PostgreSQL every second, reports to the coordinator leader and serves HTTP probes." \
  "WAL is archived by 'pgdr-agent wal-push' into an encrypted, compressed file repository."
$LABSH up
# shellcheck source=/dev/null
source "$LAB/env"
$LABSH ports

step "1. pgdrctl status: the cluster as the coordinator leader sees it"
say "The leader keeps every agent's latest report in memory: role, health, timeline, LSN and" \
  "replication lag per member, grouped by region. The primary and its epoch are Raft state." \
  "It also warns when losing one region would lose the coordinators' quorum or leave a cluster" \
  "nothing to promote: the lab's coordinators sit one per region, so it warns about nothing."
run pgdrctl status
no_layout_warnings() { status_json | jq -e '.warnings | length == 0' >/dev/null; }
wait_until 30 "pgdrctl status with no layout warnings (one coordinator per region)" no_layout_warnings

step "1b. The status page: the same, in a browser"
UI=$PGDR_LAB_UI
say "Every coordinator serves it over HTTPS (ui.listen, the API's certificate) to a client" \
  "certificate or token of role read or admin; it reloads itself every few seconds."
ui_shows_primary() { curl -fsS --max-time 5 --cacert "$LAB/tls/ca.crt" -H "Authorization: Bearer $(cat "$LAB/read.token")" "$UI" | grep -q 'data-primary="pg-a1"'; }
wait_until 30 "the status page at $UI to show pg-a1 as primary" ui_shows_primary
bold "   Status page: $UI"
echo "   In a browser: open ${UI}login (trust $LAB/tls/ca.crt) and paste the token in $LAB/read.token"
echo "   From a shell: curl --cacert $LAB/tls/ca.crt -H \"Authorization: Bearer \$(cat $LAB/read.token)\" $UI"

step "2. pgdrctl members: what is registered (replicated in Raft)"
say "Members register themselves; name, region, DSN, tags and failover priority are in the log."
run pgdrctl members

step "3. The agents' HTTP probes: /primary and /replica"
say "Load balancers (HAProxy) and Kubernetes probes route by these: /primary answers 200 only" \
  "on the primary, /replica only on a healthy replica within max_replica_lag; otherwise 503."
for n in pg-a1 pg-a2 pg-b1; do
  hp=$(port health "$n")
  p=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hp/primary")
  r=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hp/replica")
  printf '   %-6s http://127.0.0.1:%s   /primary %s   /replica %s\n' "$n" "$hp" "$p" "$r"
done
run curl -s "http://127.0.0.1:$(port health pg-b1)/replica"
echo

step "4. A write on the primary, read on both replicas"
say "Streaming replication in action: rows committed on pg-a1 appear on pg-a2 and pg-b1."
sql pg-a1 "drop table if exists demo_orders" >/dev/null
sql pg-a1 "create table demo_orders(id int primary key, note text); insert into demo_orders select g, 'before' from generate_series(1,1000) g" >/dev/null
echo "   pg-a1: inserted 1000 rows into demo_orders (LSN $(sql pg-a1 'select pg_current_wal_lsn()'))"
for n in pg-a2 pg-b1; do
  wait_until 120 "$n to replay the insert (1000 rows)" rows_are "$n" demo_orders 1000
  echo "   $n: $(sql "$n" 'select count(*) from demo_orders') rows, replayed up to $(sql "$n" 'select pg_last_wal_replay_lsn()'), read-only: $(sql "$n" 'select pg_is_in_recovery()')"
done

step "5. Maintenance mode: pgdrctl pause / resume, recorded in the history"
say "While paused the coordinators take no automatic action for the cluster (no failover)," \
  "agents keep reporting. Both changes go through Raft and land in the audit history."
run pgdrctl pause --cluster main --reason "demo: kernel upgrade on pg-a1"
run pgdrctl status
run pgdrctl resume --cluster main
run pgdrctl history --cluster main --limit 8

AGENT="$LAB/bin/pgdr-agent"
CFG="$LAB/pg-a1/agent.yaml"
step "6. The WAL archive: pgbench load, WAL switches, archiver statistics"
say "archive_command = '$AGENT wal-push --config $CFG %p';" \
  "the agent daemon pushes ready segments ahead in parallel, zstd-compressed and age-encrypted."
as_pg env PGHOST=127.0.0.1 PGPORT="$(port pg pg-a1)" "$PGBIN/pgbench" -i -q -s 5 -U postgres postgres 2>&1 | tail -1
LAST=""
for _ in 1 2 3; do LAST=$(sql pg-a1 "select pg_walfile_name(pg_switch_wal())"); done
echo "   waiting until $LAST is archived..."
wait_until 180 "$LAST to be archived" archived "$LAST"
"$PGBIN/psql" -h 127.0.0.1 -p "$(port pg pg-a1)" -U postgres -X -c "select archived_count, last_archived_wal, failed_count from pg_stat_archiver"

step "7. What the archive holds (pgdr-agent wal-list), and one segment fetched back"
run "$AGENT" wal-list --config "$CFG"
say "restore_command's job: fetch $LAST, decrypt, decompress, verify, and compare with pg_wal."
"$AGENT" wal-fetch --config "$CFG" "$LAST" "$LAB/fetched-$LAST"
TLI=${LAST:0:8}
cmp "$LAB/fetched-$LAST" "$LAB/pg-a1/pgdata/pg_wal/$LAST" &&
  echo "   identical: $(stat -c %s "$LAB/fetched-$LAST") bytes; stored as $(stat -c %s "$LAB/repo/main/wal/$TLI/$LAST" 2>/dev/null || echo '?') bytes (zstd + age)"
rm -f "$LAB/fetched-$LAST"
say "Read back and verify every archived object:"
"$AGENT" wal-verify --config "$CFG" | tail -2

step "8. A full base backup, more rows, then an incremental (pgdr-agent backup)"
say "Non-exclusive pg_backup_start/stop, files read in parallel with page checksums verified," \
  "the manifest written last; the incremental stores only what changed since its parent."
run_pg "$AGENT" backup --config "$CFG" --type full --progress=false
sql pg-a1 "insert into demo_orders select g, 'after the full backup' from generate_series(1001,2000) g" >/dev/null
run_pg "$AGENT" backup --config "$CFG" --type incr --progress=false
run "$AGENT" backup-list --config "$CFG"

step "9. Point-in-time restore: just before an accidental DELETE"
BEFORE=$(sql pg-a1 "select clock_timestamp()")
sql pg-a1 "delete from demo_orders where id > 10" >/dev/null # the accident
LAST=$(sql pg-a1 "select pg_walfile_name(pg_switch_wal())")
echo "   $BEFORE: then 'delete from demo_orders where id > 10' on pg-a1 (also replicated, of course)"
wait_until 180 "$LAST to be archived" archived "$LAST"
if [ -f "$LAB/restored/pgdata/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$LAB/restored/pgdata" -m immediate -w stop >/dev/null 2>&1 || true; fi
rm -rf "$LAB/restored"
mkdir -p "$LAB/restored"
[ "$(id -u)" = 0 ] && chown postgres: "$LAB/restored"
RPORT=$(port restore x)
run_pg "$AGENT" restore --config "$CFG" --pgdata "$LAB/restored/pgdata" \
  --target-time "$BEFORE" --target-action promote --no-archive \
  --start --port "$RPORT" --socket-dir "$LAB/restored"
echo "   rows in demo_orders: primary $(sql pg-a1 'select count(*) from demo_orders'), replica pg-b1 $(sql pg-b1 'select count(*) from demo_orders'), restored copy on :$RPORT $("$PGBIN/psql" -h 127.0.0.1 -p "$RPORT" -U postgres -qAtX -c 'select count(*) from demo_orders')"
as_pg "$PGBIN/pg_ctl" -D "$LAB/restored/pgdata" -m fast -w stop >/dev/null

step "10. The coordinator leader dies (kill -9); the others elect a new one"
OLD=$(leader)
PID=$(cat "$LAB/$OLD/coordinator.pid")
say "$OLD leads. Raft needs a majority (2 of 3): the survivors elect a new leader, every" \
  "committed change survives, and the agents find the new leader and report to it."
run kill -9 "$PID"
T0=$(date +%s%N)
wait_until 90 "a new coordinator leader" new_leader_besides "$OLD"
MS=$((($(date +%s%N) - T0) / 1000000))
echo "   new leader: $(leader), $MS ms after kill -9 of $OLD (as seen by pgdrctl, polling every 0.2s)"
wait_until 120 "every member reporting to the new leader" all_healthy
run pgdrctl status
say "$OLD restarts from its data directory and rejoins as a follower:"
$LABSH start-coordinator "$OLD"
wait_until 120 "$OLD back as a follower" coordinator_back "$OLD"
run pgdrctl coordinator list

primary_is() { status_json | jq -e --arg p "$1" '.clusters[] | select(.name == "main") | .primary == $p and (.members[] | select(.name == $p) | .role == "primary")' >/dev/null; }
new_primary() { status_json | jq -r '.clusters[] | select(.name == "main") | .primary'; }
primary_moved_from() { local p; p=$(new_primary) && [ -n "$p" ] && [ "$p" != "$1" ]; }
replica_again() { status_json | jq -e --arg n "$1" '.clusters[] | select(.name == "main") | .members[] | select(.name == $n) | .role == "replica" and .healthy' >/dev/null; }

step "11. Automatic failover: the primary host dies (kill -9 of PostgreSQL and its agent)"
say "pg-a1's agent renews a 5 s primary lease every second. The coordinators promote a" \
  "replica only once that lease has expired, so the old primary can never still be" \
  "taking writes: a primary that cannot renew fences itself first. Then the leader" \
  "promotes the best replica, re-points the other, and records every step."
run kill -9 "$(cat "$LAB/pg-a1/agent.pid")" "$(head -1 "$LAB/pg-a1/pgdata/postmaster.pid")"
T0=$(date +%s%N)
wait_until 120 "a new primary" primary_moved_from pg-a1
NEW=$(new_primary)
wait_until 120 "$NEW writable" primary_is "$NEW"
MS=$((($(date +%s%N) - T0) / 1000000))
echo "   $NEW is the primary ${MS} ms after the kill"
run_pg "$PGBIN/psql" -h 127.0.0.1 -p "$(port pg "$NEW")" -U postgres -d postgres -qAtX -c "create table after_failover as select now() as at"
run pgdrctl status
say "pg-a1's host comes back: its agent starts, the coordinators order it to rejoin, and it" \
  "is rewound with pg_rewind and streams from $NEW."
$LABSH start-agent pg-a1
wait_until 240 "pg-a1 back as a healthy replica" replica_again pg-a1
run pgdrctl history --cluster main --limit 12
say "Before pg_rewind, pg-a1's agent read its own WAL past the fork and recorded what the" \
  "failover lost (docs/divergence.md): the range, the bytes and every committed transaction."
run pgdrctl divergence --cluster main

has_failover_incident() { pgdrctl incidents --all --json --timeout 3s 2>/dev/null | jq -e '[.incidents[] | select(.category == "failover")] | length >= 1' >/dev/null; }

step "12. Incidents and runbooks"
say "The failover opened one incident (repeats fold into it), kept in Raft with its timeline;" \
  "with notification channels configured it pages, escalates and records every delivery" \
  "(docs/incidents.md). Runbooks are business-continuity procedures the leader executes step" \
  "by step; a dry run checks them against the cluster and changes nothing (docs/runbooks/)."
wait_until 60 "the failover's incident" has_failover_incident
run pgdrctl incidents --all
run pgdrctl runbook list
run pgdrctl runbook run regional-evacuation --cluster main --param region=us-east-1 --dry-run ||
  say "(the dry run refused: a precondition is not met right now, as it says above)"

step "Done"
say "The tour showed: status, members, probes, replication, maintenance mode and history," \
  "the WAL archive, backups and PITR, a coordinator leader re-election, an automatic" \
  "failover with the old primary rejoining, what it lost (the divergence report), its" \
  "incident, and a runbook's dry run."
