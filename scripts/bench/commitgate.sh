#!/usr/bin/env bash
# bench-commitgate: commit latency and TPS cost of lease-gated commits
# (failover.lease_gated_commits, agent/commitgate) against plain
# asynchronous commits on the same server.
#
# Prints figures; asserts nothing (the issue's target: the gate costs
# <= 10% TPS). One PostgreSQL 15 server on 127.0.0.1 under $PGDR_BENCH_DIR
# (default /tmp/pgdr-bench-commitgate), fsync BENCH_FSYNC (on; off isolates
# the gate's own cost from the disk's flush), pgbench -i -s BENCH_SCALE (10). Two modes, their runs interleaved (off, on, off, on, ...) so that
# drift on a shared machine hits both alike:
#   off  synchronous_standby_names = '' (commits acknowledged on local flush)
#   on   a commit gate (scripts/bench/gatehold: agent/commitgate on a lease
#        granted for an hour) named alone in synchronous_standby_names:
#        every commit waits for the gate's acknowledgement
#   recv (BENCH_RECV=1, default on) for reference: pg_receivewal
#        --synchronous as the one synchronous standby (it fsyncs its WAL
#        whatever BENCH_FSYNC says: it cannot be synchronous with
#        --no-sync): what a synchronous standby's round trip costs here
# Each run: pgbench -n -c BENCH_CLIENTS (4) -j 2 -T BENCH_SECONDS (20), the
# TPCB-like default script; BENCH_RUNS (3) runs per mode, median reported
# (TPS and average latency).
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench-commitgate}
PORT=${BENCH_PORT:-25440}
SCALE=${BENCH_SCALE:-10}
CLIENTS=${BENCH_CLIENTS:-4}
SECS=${BENCH_SECONDS:-20}
RUNS=${BENCH_RUNS:-3}
FSYNC=${BENCH_FSYNC:-on}
RECV=${BENCH_RECV:-1}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
DATA=$BENCH/pgdata
GATE_PID=
RECV_PID=
cleanup() {
	[ -n "$GATE_PID" ] && kill "$GATE_PID" 2>/dev/null && wait "$GATE_PID" 2>/dev/null || true
	[ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null && wait "$RECV_PID" 2>/dev/null || true
	as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$BENCH"
mkdir -p "$BENCH"
go build -o "$BENCH/gatehold" ./scripts/bench/gatehold
[ "$(id -u)" = 0 ] && chown postgres "$BENCH"
as_pg "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C >/dev/null
cat >>"$DATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$BENCH'
max_wal_senders = 10
shared_buffers = 128MB
fsync = $FSYNC
CONF
as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$BENCH/postgres.log" -w start >/dev/null
DSN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres sslmode=disable"
psql() { "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1

gate_on() {
	"$BENCH/gatehold" --dsn "$DSN" >"$BENCH/gate.out" 2>"$BENCH/gate.err" &
	GATE_PID=$!
	for _ in $(seq 1 300); do
		[ "$(psql -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgdr_gate' AND state = 'streaming'")" = 1 ] &&
			[ "$(psql -c "SHOW synchronous_standby_names")" = 'FIRST 1 ("pgdr_gate")' ] && return 0
		sleep 0.1
	done
	echo "the gate did not connect:" >&2; cat "$BENCH/gate.err" >&2; exit 1
}
recv_on() {
	rm -rf "$BENCH/recv"; mkdir -p "$BENCH/recv"
	"$PGBIN/pg_receivewal" -D "$BENCH/recv" --synchronous -d "$DSN application_name=bench_recv" 2>"$BENCH/recv.err" &
	RECV_PID=$!
	psql -c "ALTER SYSTEM SET synchronous_standby_names = 'bench_recv'" -c "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 1 300); do
		[ "$(psql -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'bench_recv' AND state = 'streaming'")" = 1 ] &&
			[ "$(psql -c "SHOW synchronous_standby_names")" = bench_recv ] && return 0
		sleep 0.1
	done
	echo "pg_receivewal did not connect:" >&2; cat "$BENCH/recv.err" >&2; exit 1
}
gate_off() {
	if [ -n "$GATE_PID" ]; then kill "$GATE_PID"; wait "$GATE_PID" 2>/dev/null || true; GATE_PID=; fi
	if [ -n "$RECV_PID" ]; then kill "$RECV_PID"; wait "$RECV_PID" 2>/dev/null || true; RECV_PID=; fi
	psql -c "ALTER SYSTEM SET synchronous_standby_names = ''" -c "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 1 100); do [ -z "$(psql -c "SHOW synchronous_standby_names")" ] && return 0; sleep 0.1; done
	echo "synchronous_standby_names not reset" >&2; exit 1
}
run() { # mode -> "tps latency_ms"
	psql -c CHECKPOINT >/dev/null
	out=$("$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -n -c "$CLIENTS" -j 2 -T "$SECS" postgres 2>&1)
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -1)
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
	echo "$tps $lat"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$BENCH/off.txt"; : >"$BENCH/on.txt"; : >"$BENCH/recv.txt"
for i in $(seq 1 "$RUNS"); do
	gate_off; r=$(run); echo "run $i off: tps latency_ms = $r"; echo "$r" >>"$BENCH/off.txt"
	gate_on; r=$(run); echo "run $i on:  tps latency_ms = $r"; echo "$r" >>"$BENCH/on.txt"
	if [ "$RECV" = 1 ]; then
		gate_off; recv_on; r=$(run); echo "run $i recv: tps latency_ms = $r"; echo "$r" >>"$BENCH/recv.txt"
	fi
done
gate_off
off_tps=$(cut -d' ' -f1 "$BENCH/off.txt" | median); off_lat=$(cut -d' ' -f2 "$BENCH/off.txt" | median)
on_tps=$(cut -d' ' -f1 "$BENCH/on.txt" | median); on_lat=$(cut -d' ' -f2 "$BENCH/on.txt" | median)
echo
echo "pgbench -c $CLIENTS -j 2 -T $SECS, scale $SCALE, median of $RUNS (fsync $FSYNC)"
printf '%-22s %10s %14s\n' mode tps latency_ms
printf '%-22s %10s %14s\n' "gate off (async)" "$off_tps" "$off_lat"
printf '%-22s %10s %14s\n' "gate on" "$on_tps" "$on_lat"
if [ "$RECV" = 1 ]; then
	recv_tps=$(cut -d' ' -f1 "$BENCH/recv.txt" | median); recv_lat=$(cut -d' ' -f2 "$BENCH/recv.txt" | median)
	printf '%-22s %10s %14s\n' "pg_receivewal sync" "$recv_tps" "$recv_lat"
	awk -v a="$recv_tps" -v b="$on_tps" 'BEGIN { printf "gate on / pg_receivewal sync TPS: %.3f\n", b/a }'
fi
awk -v a="$off_tps" -v b="$on_tps" 'BEGIN { printf "gate on / off TPS: %.3f (cost %.1f%%; target <= 10%%)\n", b/a, (1-b/a)*100 }'
