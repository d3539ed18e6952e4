#!/usr/bin/env bash
# make bench-failover: unplanned failover and planned switchover, pgdr against
# Patroni 3.0 + etcd 3.4 (Debian packages).
#
# Prints figures; asserts nothing (the targets are printed next to them).
# Everything runs on this one machine, on 127.0.0.1, under $PGDR_BENCH_DIR
# (default /tmp/pgdr-bench-failover): three PostgreSQL 15 servers per system,
# pgdr's 3 coordinators and 3 agents, or one etcd and 3 Patroni daemons, and
# the write probe all share its CPUs.
#
# The probe (scripts/bench/failoverclient) keeps a connection to every node
# and tries an INSERT on each every 20 ms (connect timeout 200 ms); a write
# counts when its COMMIT returned. It reports the last acknowledged write on
# the old primary and the first on another node.
#
# For pgdr the probe also writes through HAProxy running the shipped
# deploy/haproxy/haproxy.cfg, of which only the addresses are rewritten (the
# lab's ports at BENCH_PGDR_PORT_BASE, free ports for its frontends and
# stats page; every check setting as shipped): what a client of the
# documented routing sees. The node behind each write is told by its
# cluster_name. Reported: kill -> first write through HAProxy, and its
# difference with the direct first write (the time routing adds; issue 20's
# target is at most 0.5 s).
#
#   unplanned failover  kill -9 of the primary's postmaster and of its HA
#                       daemon (pgdr-agent / patroni) at the same instant ->
#                       first acknowledged write on the new primary.
#   switchover          `pgdrctl switchover --cluster main --to NODE` /
#                       Patroni's REST POST /switchover (what patronictl
#                       switchover --force calls), targets alternating:
#                       last acknowledged write on the old primary -> first
#                       on the new one (the write-unavailability window).
#
# Systems:
#   pgdr                scripts/lab.sh (3 coordinators, primary pg-a1 and
#                       replicas pg-a2, pg-b1), failover settings at their
#                       defaults (lease_ttl 5s, safety_margin 1s, loop 1s)
#                       except failover.min_interval, lowered to
#                       BENCH_PGDR_MIN_INTERVAL (1s) so that repetitions are
#                       not refused as flapping.
#   pgdr-fast           the same with lease_ttl BENCH_PGDR_FAST_TTL (3s) and
#                       safety_margin 1s: pgdr's counterpart of Patroni's
#                       aggressive settings (the lease bounds pgdr's failover:
#                       nobody is promoted before it expires, 4-5 s after the
#                       kill at the defaults).
#   Patroni default     ttl 30, loop_wait 10, retry_timeout 10 (its defaults)
#   Patroni aggressive  BENCH_PATRONI_AGGRESSIVE "ttl loop_wait retry_timeout"
#                       (default "7 1 3": loop_wait 1 and retry_timeout 3 are
#                       the smallest values Patroni documents as possible,
#                       ttl = loop_wait + 2 x retry_timeout, the rule's bound;
#                       Patroni 3.0.2 accepts it, later Patroni raises ttl < 20
#                       to 20, so this is more aggressive than they allow).
#   Patroni: etcd3 API, use_pg_rewind, data checksums, trust on 127.0.0.1.
#
# Between repetitions the killed node is restarted (lab.sh start-agent /
# patroni again) and must rejoin as a replica (pg_rewind); when it has not
# within BENCH_REJOIN_TIMEOUT, that is reported and the system is rebuilt.
#
# Environment: PGDR_BENCH_DIR, BENCH_REPS (5; 1 for a quick check),
# BENCH_HAPROXY (1; 0: pgdr without HAProxy), BENCH_HAPROXY_PORT (27300: first
# of 3 consecutive free ports for HAProxy's frontends and stats page),
# BENCH_SYSTEMS ("pgdr pgdr-fast patroni-aggressive patroni-default"), BENCH_CAP (120 s:
# bound of one measured repetition), BENCH_REJOIN_TIMEOUT (120 s),
# BENCH_PGDR_PORT_BASE (27000; the lab uses base+1..base+69),
# BENCH_PORT_BASE (27200: first of 8 consecutive free ports for etcd and
# Patroni), BENCH_PGDR_MIN_INTERVAL (1s), BENCH_PGDR_FAST_TTL (3s),
# BENCH_PATRONI_AGGRESSIVE ("7 1 3").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench-failover}
BENCH=${BENCH%/}
REPS=${BENCH_REPS:-5}
SYSTEMS=${BENCH_SYSTEMS:-pgdr pgdr-fast patroni-aggressive patroni-default}
FAST_TTL=${BENCH_PGDR_FAST_TTL:-3s}
LEASE_TTL=5s # the lab's lease_ttl for the system being measured
CAP=${BENCH_CAP:-120}
REJOIN_TIMEOUT=${BENCH_REJOIN_TIMEOUT:-120}
PGDR_PORT_BASE=${BENCH_PGDR_PORT_BASE:-27000}
PORT_BASE=${BENCH_PORT_BASE:-27200}
MIN_INTERVAL=${BENCH_PGDR_MIN_INTERVAL:-1s}
USE_HAPROXY=${BENCH_HAPROXY:-1}
HAPROXY_PORT_FROM=${BENCH_HAPROXY_PORT:-27300}
PROXY="" # host:port the probe also writes through (pgdr with HAProxy)
read -r AG_TTL AG_LOOP AG_RETRY <<< "${BENCH_PATRONI_AGGRESSIVE:-7 1 3}"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
LAB=$BENCH/lab
RUN_START=$SECONDS

say() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
now_ns() { echo "${EPOCHREALTIME/./}000"; }
as_pg() { runuser -u postgres -- "$@"; }

[ "$(id -u)" = 0 ] || { say "run as root (PostgreSQL and Patroni run as the postgres user; the packages may need installing)"; exit 1; }

# ---------------------------------------------------------------- clean-up
# Every process this script starts itself is recorded (pid and a path its
# command line must contain), every PostgreSQL data directory Patroni runs
# too; the EXIT trap ends exactly those, and stops the pgdr lab with
# `lab.sh down` (which stops only what the lab started).
REG_PID="$BENCH.pid.list"
REG_PG="$BENCH.pgdata.list"
stop_pid() { # stop_pid PID [grace seconds]
  local pid=$1 grace=${2:-15} dl
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || return 0
  dl=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $dl ]; do sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_pg() {
  [ -f "$1/postmaster.pid" ] || return 0
  as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}
lab() { PGDR_LAB_DIR=$LAB PGDR_LAB_PORT_BASE=$PGDR_PORT_BASE PGDR_LAB_MIN_INTERVAL=$MIN_INTERVAL PGDR_LAB_LEASE_TTL=$LEASE_TTL PGDR_BIN=$ROOT/bin bash "$ROOT/scripts/lab.sh" "$@"; }
cleanup() {
  local pid mark d
  if [ -f "$REG_PID" ]; then
    while read -r pid mark; do
      if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark"; then
        stop_pid "$pid" 20
      fi
    done < "$REG_PID"
  fi
  if [ -f "$REG_PG" ]; then while read -r d; do stop_pg "$d"; done < "$REG_PG"; fi
  [ -f "$LAB/.pgdr-lab" ] && { lab down >/dev/null 2>&1 || lab down >&2 || true; }
  rm -f "$REG_PID" "$REG_PG"
}
register_pid() { echo "$1 $2" >> "$REG_PID"; }
cleanup # a previous run that was killed hard may have left processes behind
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ prerequisites
for t in curl jq ss setpriv; do command -v $t >/dev/null || { say "$t is required"; exit 1; }; done
[ -x "$PGBIN/postgres" ] || bash scripts/ci-deps.sh
if [[ " $SYSTEMS " == *" patroni-"* ]] && { ! command -v patroni >/dev/null || ! command -v etcd >/dev/null; }; then
  say "installing patroni and etcd-server (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patroni etcd-server >/dev/null
fi
# Debian's etcd-server package enables a system etcd on the default ports;
# this benchmark runs its own on free ports and leaves that one alone.
# (a bin/ older than `pgdrctl switchover` is rebuilt)
{ [ -x bin/pgdr-agent ] && [ -x bin/pgdr-coordinator ] && [ -x bin/pgdrctl ] &&
  bin/pgdrctl help switchover >/dev/null 2>&1; } || make build
rm -rf "$BENCH"
mkdir -p "$BENCH"
chmod 755 "$BENCH"
say "building the write probe (scripts/bench/failoverclient)"
go build -o "$BENCH/failoverclient" ./scripts/bench/failoverclient
CLIENT="$BENCH/failoverclient"
PATRONI_VERSION=$(patroni --version 2>/dev/null | awk '{print $NF}' || true)
ETCD_VERSION=$(etcd --version 2>/dev/null | awk '/etcd Version/{print $3}' || true)
PATRONI_VERSION=${PATRONI_VERSION:-"(not installed)"} ETCD_VERSION=${ETCD_VERSION:-"(not installed)"}
PG_VERSION=$("$PGBIN/postgres" --version | awk '{print $3}')

# ------------------------------------------------------------------- ports
port_free() { [ -z "$(ss -Htanu "( sport = :$1 )" 2>/dev/null)" ]; }
find_ports() { # find_ports FROM COUNT: first of COUNT consecutive free ports
  local b=$1 n=$2 i ok
  while [ "$b" -lt 65000 ]; do
    ok=1
    for ((i = 0; i < n; i++)); do port_free $((b + i)) || { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$b"; return 0; }
    b=$((b + n))
  done
  return 1
}

declare -A FO SW NOTE DEC PROMO  # per system: space-separated figures (DEC, PROMO: pgdr's failover split), notes
declare -A HFO HEXTRA HSW         # through HAProxy: kill -> first write, that less the direct one, switchover window
add_note() { NOTE[$1]="${NOTE[$1]:-}${NOTE[$1]:+; }$2"; say "$1: $2"; }
DETAIL="$BENCH/details.txt"
: > "$DETAIL"

# probe_start OUT NODES: starts the write probe, waits (15 s at most) until
# it has seen a first write. Sets PROBE_PID. Fails when no node took a write.
probe_start() {
  local out=$1 nodes=$2 dl
  "$CLIENT" --nodes "$nodes" ${PROXY:+--proxy "$PROXY"} --timeout "${CAP}s" > "$out" 2> "$out.err" &
  PROBE_PID=$!
  register_pid "$PROBE_PID" "$CLIENT"
  dl=$((SECONDS + 15))
  while [ $SECONDS -lt $dl ]; do
    grep -q '^ready ' "$out" 2>/dev/null && { sleep 0.3; return 0; }
    kill -0 "$PROBE_PID" 2>/dev/null || break
    sleep 0.05
  done
  stop_pid "$PROBE_PID" 5
  return 1
}
# probe_wait OUT: waits for the probe (not in a $(...): a subshell cannot
# wait for this shell's child), then sets PROBE_JSON to its result line.
probe_wait() { wait "$PROBE_PID" 2>/dev/null || true; PROBE_JSON=$(tail -1 "$1"); }
jget() { jq -r "$2 // empty" <<< "$1" 2>/dev/null || true; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "") print ""; else printf "%.3f", (b - a) / 1e9 }'; }

# pgdr_decision_ns KILL_NS OLD: when the coordinator leader decided the
# failover of OLD (its "failover" log line), the first such line after the
# kill, in nanoseconds ("" when none).
pgdr_decision_ns() {
  local ts ns
  while read -r ts; do
    ns=$(date -d "$ts" +%s%N 2>/dev/null) || continue
    [ "$ns" -ge "$1" ] && { echo "$ns"; return; }
  done < <(cat "$LAB"/c?/coordinator.log 2>/dev/null | grep -F 'msg=failover ' | grep -F "old_primary=$2 " |
    sed -n 's/^time=\([^ ]*\) .*/\1/p' | sort)
}

# record_failover SYS REP KILL_NS JSON OLD
record_failover() {
  local sys=$1 rep=$2 kill_ns=$3 js=$4 old=$5 new first err t oan split="" dec
  new=$(jget "$js" .new); first=$(jget "$js" .first_new_ns); err=$(jget "$js" .error); oan=$(jget "$js" .old_after_new)
  if [ -n "$first" ]; then
    t=$(secs "$kill_ns" "$first")
    FO[$sys]="${FO[$sys]:-} $t"
    # pgdr: split the time at the leader's decision. Kill -> decision is the
    # lease running out (lease_ttl less the age of the last renewal, which
    # the agent sends once a second) plus the leader's 250 ms tick; decision
    # -> first write is pgdr's own promotion path.
    if [[ $sys == pgdr* ]] && dec=$(pgdr_decision_ns "$kill_ns" "$old") && [ -n "$dec" ]; then
      split=" = kill -> leader's decision $(secs "$kill_ns" "$dec") s + decision -> first write $(secs "$dec" "$first") s;"
      DEC[$sys]="${DEC[$sys]:-} $(secs "$kill_ns" "$dec")"; PROMO[$sys]="${PROMO[$sys]:-} $(secs "$dec" "$first")"
    fi
    echo "$sys failover   #$rep: $old -> $new: kill -> first write $t s$split (last write on $old at kill$(awk -v d="$(secs "$kill_ns" "$(jget "$js" .last_old_ns)")" 'BEGIN{printf "%+.3f", d}') s, an ack in flight can land just after; writes on $old after $new's first: ${oan:-0})" >> "$DETAIL"
    record_proxy_failover "$sys" "$rep" "$kill_ns" "$js" "$t"
    say "$sys failover #$rep: $old -> $new in $t s"
    [ "${oan:-0}" != 0 ] && add_note "$sys" "failover #$rep: the old primary $old acknowledged $oan write(s) after $new's first"
  else
    FO[$sys]="${FO[$sys]:-} >$CAP"
    echo "$sys failover   #$rep: $old -> none: ${err:-probe gave no result}" >> "$DETAIL"
    add_note "$sys" "failover #$rep: no new primary took a write within ${CAP} s (${err:-no result})"
  fi
  return 0
}
# record_proxy_failover SYS REP KILL_NS JSON DIRECT_SECONDS: the writes
# through HAProxy, when the probe made them.
record_proxy_failover() {
  local sys=$1 rep=$2 kill_ns=$3 js=$4 direct=$5 pfirst pnew perr t extra
  [ -n "$PROXY" ] || return 0
  pfirst=$(jget "$js" .proxy_first_new_ns); pnew=$(jget "$js" .proxy_new); perr=$(jget "$js" .proxy_error)
  if [ -n "$pfirst" ]; then
    t=$(secs "$kill_ns" "$pfirst")
    extra=$(awk -v a="$t" -v b="$direct" 'BEGIN{printf "%.3f", a - b}')
    HFO[$sys]="${HFO[$sys]:-} $t"; HEXTRA[$sys]="${HEXTRA[$sys]:-} $extra"
    echo "$sys   via HAProxy #$rep: kill -> first write through HAProxy (on $pnew) $t s = direct $direct s + routing $extra s" >> "$DETAIL"
    say "$sys failover #$rep through HAProxy: $t s (routing adds $extra s)"
  else
    HFO[$sys]="${HFO[$sys]:-} >$CAP"
    add_note "$sys" "failover #$rep: no write through HAProxy reached the new primary (${perr:-no result})"
  fi
}
# record_switchover SYS REP JSON OLD TARGET CMD_SECONDS RC
record_switchover() {
  local sys=$1 rep=$2 js=$3 old=$4 target=$5 cmd=$6 rc=$7 new w err oan
  new=$(jget "$js" .new); w=$(jget "$js" .window_s); err=$(jget "$js" .error); oan=$(jget "$js" .old_after_new)
  if [ -n "$w" ]; then
    w=$(awk -v w="$w" 'BEGIN{printf "%.3f", w}')
    SW[$sys]="${SW[$sys]:-} $w"
    echo "$sys switchover #$rep: $old -> $new (asked: $target): no write for $w s; command took $cmd s (exit $rc)" >> "$DETAIL"
    if [ -n "$PROXY" ] && [ -n "$(jget "$js" .proxy_window_s)" ]; then
      local pw
      pw=$(awk -v w="$(jget "$js" .proxy_window_s)" 'BEGIN{printf "%.3f", w}')
      HSW[$sys]="${HSW[$sys]:-} $pw"
      echo "$sys   via HAProxy #$rep: no write through HAProxy for $pw s" >> "$DETAIL"
    fi
    say "$sys switchover #$rep: $old -> $new: unavailable $w s (command $cmd s, exit $rc)"
    [ "$new" != "$target" ] && add_note "$sys" "switchover #$rep: asked for $target, $new took the writes"
    [ "${oan:-0}" != 0 ] && add_note "$sys" "switchover #$rep: the old primary $old acknowledged $oan write(s) after $new's first"
  else
    SW[$sys]="${SW[$sys]:-} >$CAP"
    echo "$sys switchover #$rep: $old -> none (asked: $target): ${err:-no result}; command took $cmd s (exit $rc)" >> "$DETAIL"
    add_note "$sys" "switchover #$rep: no other node took a write within ${CAP} s (command exit $rc; ${err:-no result})"
  fi
  if [ "$rc" != 0 ]; then add_note "$sys" "switchover #$rep: the command exited $rc (see $BENCH)"; fi
  return 0
}

# =============================================================== pgdr
PNODES=(pg-a1 pg-a2 pg-b1)
pctl() { ( source "$LAB/env"; "$LAB/bin/pgdrctl" "$@" ); }
pgdr_nodes() {
  local n s=""
  for n in "${PNODES[@]}"; do s+="${s:+,}$n=127.0.0.1:$(lab port pg "$n")"; done
  echo "$s"
}
# pgdr_healthy TIMEOUT: echoes the primary once status shows 3 healthy
# members, the primary's role primary and the others replicas.
pgdr_primary_check() {
  local out=$1
  jq -e '.clusters[] | select(.name == "main") | . as $c |
    (.members | length) == 3 and ($c.primary // "") != "" and
    all(.members[]; .healthy and (if .name == $c.primary then .role == "primary" else .role == "replica" end))' <<< "$out" >/dev/null 2>&1
}
pgdr_healthy() {
  local dl=$((SECONDS + $1)) out
  while [ $SECONDS -lt $dl ]; do
    out=$(pctl status --json --timeout 3s 2>/dev/null) || out=""
    if [ -n "$out" ] && pgdr_primary_check "$out"; then
      jq -r '.clusters[] | select(.name == "main") | .primary' <<< "$out"
      return 0
    fi
    sleep 0.3
  done
  echo "$out" > "$BENCH/pgdr-last-status.json"
  return 1
}
pgdr_fresh() {
  [ -f "$LAB/.pgdr-lab" ] && lab down > "$BENCH/lab-down.log" 2>&1 || true
  lab up > "$BENCH/lab-up.log" 2>&1 || { say "lab.sh up failed:"; tail -20 "$BENCH/lab-up.log" >&2; return 1; }
}
pgdr_pid() { head -1 "$1" 2>/dev/null | tr -dc 0-9; }

# HAProxy with the shipped configuration in front of the lab: only its
# addresses are rewritten (deploy/haproxy/haproxy.cfg is written for the lab
# at port base 26000 and binds :5000, :5001 and 127.0.0.1:7000).
HAPROXY_PID=""
haproxy_start() {
  local hb hp
  [ "$USE_HAPROXY" = 1 ] || return 0
  hp=$(command -v haproxy || echo /usr/sbin/haproxy)
  [ -x "$hp" ] || { bash scripts/ci-deps.sh >/dev/null; hp=$(command -v haproxy || echo /usr/sbin/haproxy); }
  hb=$(find_ports "$HAPROXY_PORT_FROM" 3) || { say "no 3 free consecutive ports from $HAPROXY_PORT_FROM for HAProxy"; return 1; }
  B=$PGDR_PORT_BASE perl -pe 's/\b260(\d\d)\b/$ENV{B} + $1/ge' deploy/haproxy/haproxy.cfg |
    sed -e "s/bind \*:5000/bind 127.0.0.1:$hb/" -e "s/bind \*:5001/bind 127.0.0.1:$((hb + 1))/" \
      -e "s/bind 127\.0\.0\.1:7000/bind 127.0.0.1:$((hb + 2))/" > "$BENCH/haproxy.cfg"
  diff deploy/haproxy/haproxy.cfg "$BENCH/haproxy.cfg" > "$BENCH/haproxy.cfg.diff" || true
  "$hp" -c -f "$BENCH/haproxy.cfg" > "$BENCH/haproxy-check.log" 2>&1 || { say "haproxy -c failed:"; cat "$BENCH/haproxy-check.log" >&2; return 1; }
  "$hp" -db -f "$BENCH/haproxy.cfg" > "$BENCH/haproxy.log" 2>&1 &
  HAPROXY_PID=$!
  register_pid "$HAPROXY_PID" "$BENCH/haproxy.cfg"
  PROXY=127.0.0.1:$hb
  HAPROXY_STATS=127.0.0.1:$((hb + 2))
  say "HAProxy (deploy/haproxy/haproxy.cfg, addresses rewritten: $BENCH/haproxy.cfg.diff) on $PROXY"
}
haproxy_stop() {
  [ -z "$HAPROXY_PID" ] || stop_pid "$HAPROXY_PID" 10
  HAPROXY_PID=""; PROXY=""
}
# haproxy_settled PRIMARY TIMEOUT: waits until HAProxy's primary backend has
# PRIMARY, and only it, up (its stats page as CSV).
haproxy_settled() {
  local dl=$((SECONDS + $2)) up=""
  [ -n "$PROXY" ] || return 0
  while [ $SECONDS -lt $dl ]; do
    up=$(curl -fs -m 1 "http://$HAPROXY_STATS/;csv" 2>/dev/null | awk -F, '$1 == "primary" && $2 != "BACKEND" && $2 != "FRONTEND" && $18 == "UP" {print $2}' | tr '\n' ' ')
    [ "$up" = "$1 " ] && return 0
    sleep 0.2
  done
  say "HAProxy's primary backend has [${up:-}] up, want [$1]"
  return 1
}

run_pgdr() { # run_pgdr SYSTEM LEASE_TTL
  local sys=$1 rep primary target js t0 t1 rc kill_ns pp ap out
  LEASE_TTL=$2
  say "$sys: lab up (PGDR_LAB_DIR=$LAB, ports $((PGDR_PORT_BASE + 1))..$((PGDR_PORT_BASE + 69)), lease_ttl $LEASE_TTL, min_interval $MIN_INTERVAL)"
  pgdr_fresh || { add_note $sys "lab up failed"; return 0; }
  haproxy_start || add_note $sys "HAProxy did not start: measured without it"
  PGDR_VERSION=$("$LAB/bin/pgdrctl" version 2>/dev/null | head -1 || echo "?")
  local nodes; nodes=$(pgdr_nodes)
  # Switchovers, targets alternating between pg-a2 and pg-a1.
  for ((rep = 1; rep <= REPS; rep++)); do
    primary=$(pgdr_healthy 60) || { add_note $sys "switchover #$rep: lab not healthy within 60 s; fresh lab"; pgdr_fresh || return 0; primary=$(pgdr_healthy 60) || return 0; }
    if [ "$primary" = pg-a2 ]; then target=pg-a1; else target=pg-a2; fi
    out="$BENCH/$sys-sw-$rep"
    haproxy_settled "$primary" 30 || add_note $sys "switchover #$rep: HAProxy had not settled on $primary"
    probe_start "$out.probe" "$nodes" || { add_note $sys "switchover #$rep: the probe saw no write"; continue; }
    t0=$(now_ns); rc=0
    ( source "$LAB/env"; timeout "$CAP" "$LAB/bin/pgdrctl" switchover --cluster main --to "$target" --json ) \
      > "$out.json" 2> "$out.err" < /dev/null || rc=$?
    t1=$(now_ns)
    probe_wait "$out.probe"; js=$PROBE_JSON
    record_switchover $sys "$rep" "$js" "$primary" "$target" "$(secs "$t0" "$t1")" "$rc"
  done
  # Unplanned failovers: kill -9 the primary's postmaster and agent together.
  for ((rep = 1; rep <= REPS; rep++)); do
    primary=$(pgdr_healthy 60) || {
      add_note $sys "failover #$rep: lab not healthy (3 healthy members) within 60 s; fresh lab"
      pgdr_fresh || return 0; primary=$(pgdr_healthy 60) || return 0; }
    out="$BENCH/$sys-fo-$rep"
    haproxy_settled "$primary" 30 || add_note $sys "failover #$rep: HAProxy had not settled on $primary"
    pp=$(pgdr_pid "$LAB/$primary/pgdata/postmaster.pid"); ap=$(pgdr_pid "$LAB/$primary/agent.pid")
    [ -n "$pp" ] && [ -n "$ap" ] || { add_note $sys "failover #$rep: no pid for $primary's postmaster or agent"; continue; }
    probe_start "$out.probe" "$nodes" || { add_note $sys "failover #$rep: the probe saw no write"; continue; }
    kill_ns=$(now_ns)
    kill -9 "$pp" "$ap" 2>/dev/null || true
    probe_wait "$out.probe"; js=$PROBE_JSON
    record_failover $sys "$rep" "$kill_ns" "$js" "$primary"
    pctl status > "$out.status" 2>&1 || true
    # Bring the killed node back: the agent rejoins it as a replica (pg_rewind).
    t0=$SECONDS
    lab start-agent "$primary" > "$out.rejoin.log" 2>&1 || true
    if pgdr_healthy "$REJOIN_TIMEOUT" > /dev/null; then
      echo "$sys rejoin     #$rep: $primary back as a replica (3 healthy members) after $((SECONDS - t0)) s" >> "$DETAIL"
    else
      add_note $sys "failover #$rep: $primary did not rejoin within ${REJOIN_TIMEOUT} s (status in $BENCH/pgdr-last-status.json, logs under $LAB); fresh lab"
      cp -a "$LAB" "$BENCH/$sys-lab-failed-$rep" 2>/dev/null || true
      pgdr_fresh || return 0
    fi
  done
  pctl history > "$BENCH/$sys-history.txt" 2>&1 || true
  haproxy_stop
  lab down > "$BENCH/lab-down.log" 2>&1 || true
}

# =============================================================== Patroni
ETCD_PID=""
start_etcd() {
  local base; base=$(find_ports "$PORT_BASE" 8) || { say "no 8 free consecutive ports from $PORT_BASE"; return 1; }
  PBASE=$base
  ETCD_CLIENT=127.0.0.1:$base; ETCD_PEER=127.0.0.1:$((base + 1))
  mkdir -p "$BENCH/etcd"
  chmod 700 "$BENCH/etcd"
  etcd --name bench --data-dir "$BENCH/etcd/data" \
    --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
    --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
    --initial-cluster "bench=http://$ETCD_PEER" --initial-cluster-state new \
    --log-level warn > "$BENCH/etcd/etcd.log" 2>&1 &
  ETCD_PID=$!
  register_pid "$ETCD_PID" "$BENCH/etcd/data"
  local dl=$((SECONDS + 30))
  while [ $SECONDS -lt $dl ]; do
    curl -fs -m 1 "http://$ETCD_CLIENT/health" 2>/dev/null | grep -q true && return 0
    sleep 0.2
  done
  say "etcd did not become healthy in 30 s:"; tail -20 "$BENCH/etcd/etcd.log" >&2
  return 1
}

PAT=(p1 p2 p3)
declare -A PPID_OF PG_PORT REST_PORT
PDIR=""
SCOPE=""
GEN=0
pat_idx() { case "$1" in p1) echo 0 ;; p2) echo 1 ;; p3) echo 2 ;; esac; }
write_patroni() { # write_patroni NODE TTL LOOP RETRY
  local n=$1 i d
  i=$(pat_idx "$n"); d=$PDIR/$n
  PG_PORT[$n]=$((PBASE + 2 + 2 * i)); REST_PORT[$n]=$((PBASE + 3 + 2 * i))
  mkdir -p "$d"
  cat > "$d/patroni.yml" <<YAML
scope: $SCOPE
name: $n
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${REST_PORT[$n]}
  connect_address: 127.0.0.1:${REST_PORT[$n]}
etcd3:
  hosts: $ETCD_CLIENT
bootstrap:
  dcs:
    ttl: $2
    loop_wait: $3
    retry_timeout: $4
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 512MB
        hot_standby: 'on'
  initdb:
    - encoding: UTF8
    - locale: C
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication all 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:${PG_PORT[$n]}
  connect_address: 127.0.0.1:${PG_PORT[$n]}
  data_dir: $d/data
  bin_dir: $PGBIN
  pgpass: $d/pgpass
  authentication:
    superuser: {username: postgres, password: bench}
    replication: {username: replicator, password: bench}
    rewind: {username: postgres, password: bench}
  parameters:
    unix_socket_directories: '$d'
tags: {}
YAML
  chown -R postgres: "$d"
  chmod 700 "$d"
  grep -qxF "$d/data" "$REG_PG" 2>/dev/null || echo "$d/data" >> "$REG_PG"
}
start_patroni() {
  local n=$1 d=$PDIR/$1
  setpriv --reuid=postgres --regid=postgres --init-groups -- patroni "$d/patroni.yml" >> "$d/patroni.log" 2>&1 &
  PPID_OF[$n]=$!
  register_pid "${PPID_OF[$n]}" "$d/patroni.yml"
}
stop_patroni_all() {
  local n
  for n in "${PAT[@]}"; do
    [ -z "${PPID_OF[$n]:-}" ] || stop_pid "${PPID_OF[$n]}" 30
    PPID_OF[$n]=""
    stop_pg "$PDIR/$n/data"
  done
}
pat_cluster() { # /cluster from the first node that answers
  local n out
  for n in "${PAT[@]}"; do
    out=$(curl -fs -m 1 "http://127.0.0.1:${REST_PORT[$n]}/cluster" 2>/dev/null) && [ -n "$out" ] && { echo "$out"; return 0; }
  done
  return 1
}
# pat_healthy TIMEOUT: echoes the leader once 3 members run: one leader, two
# replicas running/streaming with a known lag.
pat_healthy() {
  local dl=$((SECONDS + $1)) out=""
  while [ $SECONDS -lt $dl ]; do
    out=$(pat_cluster) || out=""
    if [ -n "$out" ] && jq -e '(.members | length) == 3 and
        ([.members[] | select(.role == "leader" and .state == "running")] | length) == 1 and
        ([.members[] | select(.role == "replica" and (.state == "running" or .state == "streaming") and ((.lag | type) == "number"))] | length) == 2' \
        <<< "$out" >/dev/null 2>&1; then
      jq -r '.members[] | select(.role == "leader") | .name' <<< "$out"
      return 0
    fi
    sleep 0.3
  done
  echo "$out" > "$BENCH/patroni-last-cluster.json"
  return 1
}
pat_fresh() { # pat_fresh TTL LOOP RETRY
  local n
  stop_patroni_all
  GEN=$((GEN + 1))
  SCOPE=bench-$GEN
  for n in "${PAT[@]}"; do rm -rf "${PDIR:?}/$n"; write_patroni "$n" "$@"; done
  for n in "${PAT[@]}"; do start_patroni "$n"; done
  pat_healthy 180 > /dev/null || { say "Patroni cluster $SCOPE not healthy within 180 s"; return 1; }
}
pat_nodes() {
  local n s=""
  for n in "${PAT[@]}"; do s+="${s:+,}$n=127.0.0.1:${PG_PORT[$n]}"; done
  echo "$s"
}

run_patroni() { # run_patroni SYS TTL LOOP RETRY
  local sys=$1 ttl=$2 loop=$3 retry=$4 rep leader target js t0 t1 rc kill_ns pp ap out
  PDIR=$BENCH/$sys
  mkdir -p "$PDIR"
  chmod 755 "$PDIR"
  say "$sys: 3 Patroni nodes (ttl $ttl, loop_wait $loop, retry_timeout $retry), etcd $ETCD_CLIENT"
  pat_fresh "$ttl" "$loop" "$retry" || { add_note "$sys" "cluster did not bootstrap within 180 s (logs in $PDIR)"; stop_patroni_all; return 0; }
  local applied
  applied=$(curl -fs -m 2 "http://127.0.0.1:${REST_PORT[p1]}/config" | jq -c '{ttl, loop_wait, retry_timeout}' 2>/dev/null || echo "?")
  echo "$sys: dynamic configuration in the DCS: $applied" >> "$DETAIL"
  local nodes; nodes=$(pat_nodes)
  for ((rep = 1; rep <= REPS; rep++)); do
    leader=$(pat_healthy 120) || { add_note "$sys" "switchover #$rep: cluster not healthy within 120 s; rebuilt"; pat_fresh "$ttl" "$loop" "$retry" || return 0; leader=$(pat_healthy 60) || return 0; }
    if [ "$leader" = p2 ]; then target=p1; else target=p2; fi
    out="$PDIR/sw-$rep"
    probe_start "$out.probe" "$nodes" || { add_note "$sys" "switchover #$rep: the probe saw no write"; continue; }
    t0=$(now_ns); rc=0
    curl -s -m "$CAP" -X POST -H 'Content-Type: application/json' \
      -d "{\"leader\": \"$leader\", \"candidate\": \"$target\"}" \
      "http://127.0.0.1:${REST_PORT[$leader]}/switchover" > "$out.resp" 2>&1 || rc=$?
    t1=$(now_ns)
    probe_wait "$out.probe"; js=$PROBE_JSON
    grep -qi "success" "$out.resp" || { [ $rc = 0 ] && rc=1; }
    record_switchover "$sys" "$rep" "$js" "$leader" "$target" "$(secs "$t0" "$t1")" "$rc"
    [ $rc = 0 ] || echo "$sys switchover #$rep response: $(head -c 300 "$out.resp")" >> "$DETAIL"
  done
  for ((rep = 1; rep <= REPS; rep++)); do
    leader=$(pat_healthy "$REJOIN_TIMEOUT") || {
      add_note "$sys" "failover #$rep: cluster not healthy within ${REJOIN_TIMEOUT} s; rebuilt"
      pat_fresh "$ttl" "$loop" "$retry" || return 0; leader=$(pat_healthy 60) || return 0; }
    out="$PDIR/fo-$rep"
    pp=$(pgdr_pid "$PDIR/$leader/data/postmaster.pid"); ap=${PPID_OF[$leader]:-}
    [ -n "$pp" ] && [ -n "$ap" ] || { add_note "$sys" "failover #$rep: no pid for $leader's postmaster or patroni"; continue; }
    probe_start "$out.probe" "$nodes" || { add_note "$sys" "failover #$rep: the probe saw no write"; continue; }
    kill_ns=$(now_ns)
    kill -9 "$pp" "$ap" 2>/dev/null || true
    { wait "$ap"; } 2>/dev/null || true
    PPID_OF[$leader]=""
    probe_wait "$out.probe"; js=$PROBE_JSON
    record_failover "$sys" "$rep" "$kill_ns" "$js" "$leader"
    # Bring the killed node back: Patroni rejoins it as a replica (pg_rewind).
    t0=$SECONDS
    start_patroni "$leader"
    if pat_healthy "$REJOIN_TIMEOUT" > /dev/null; then
      echo "$sys rejoin  #$rep: $leader back as a replica after $((SECONDS - t0)) s" >> "$DETAIL"
    else
      add_note "$sys" "failover #$rep: $leader did not rejoin within ${REJOIN_TIMEOUT} s; rebuilt"
      pat_fresh "$ttl" "$loop" "$retry" || return 0
    fi
  done
  stop_patroni_all
}

# ---------------------------------------------------------------------- run
PGDR_VERSION="?"
{
  echo "pgdr failover benchmark — $(date -u +%FT%TZ)"
  echo "machine:    $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -m | awk '/^Mem:/{printf "%.1f GiB", $2/1024}') memory, kernel $(uname -r)"
  echo "set-up:     everything on this one machine, 127.0.0.1: per system three PostgreSQL $PG_VERSION servers, its HA daemons"
  echo "            (pgdr: 3 coordinators + 3 agents; Patroni $PATRONI_VERSION: 3 patroni + 1 etcd $ETCD_VERSION) and the write probe;"
  echo "            they all share its $(nproc) CPUs"
} > "$BENCH/results.head"
cat "$BENCH/results.head" >&2

for sys in $SYSTEMS; do
  case "$sys" in
    pgdr) run_pgdr pgdr 5s ;;
    pgdr-fast) run_pgdr pgdr-fast "$FAST_TTL" ;;
    patroni-*)
      [ -n "$ETCD_PID" ] || start_etcd || { add_note "$sys" "etcd did not start"; continue; }
      if [ "$sys" = patroni-default ]; then run_patroni "$sys" 30 10 10; else run_patroni "$sys" "$AG_TTL" "$AG_LOOP" "$AG_RETRY"; fi
      ;;
    *) say "unknown system $sys (pgdr, pgdr-fast, patroni-aggressive, patroni-default)" ;;
  esac
done
[ -z "$ETCD_PID" ] || stop_pid "$ETCD_PID" 10

# -------------------------------------------------------------------- report
# stats "V V V": median, min, max, n (a value ">CAP" counts as CAP and
# marks the median as a lower bound when it is reached).
median() { tr ' ' '\n' | sed 's/^>//' | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else if (NR%2) printf "%.2f\n", a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
vmin() { tr ' ' '\n' | sed 's/^>//' | { grep -E '^[0-9.]+$' || true; } | sort -g | head -1 | awk '{printf "%.2f", $1}'; }
vmax() { tr ' ' '\n' | sed 's/^>//' | { grep -E '^[0-9.]+$' || true; } | sort -g | tail -1 | awk '{printf "%.2f", $1}'; }
count() { tr ' ' '\n' | grep -cE '^>?[0-9.]+$' || true; }
fails() { tr ' ' '\n' | grep -c '^>' || true; }
cell() { # cell "VALUES": "median  min–max  n"
  local v="$1" m
  m=$(median <<< "$v")
  if [ "$m" = "-" ]; then printf '%8s %15s %3s' - - 0; return; fi
  printf '%8s %15s %3s' "$m" "$(vmin <<< "$v")–$(vmax <<< "$v")" "$(count <<< "$v")$( [ "$(fails <<< "$v")" != 0 ] && echo "!")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
mark() { # mark VALUE LIMIT: ✓ when VALUE <= LIMIT
  awk -v v="$1" -v l="$2" 'BEGIN{ if (v == "" || v == "-" || v == "n/a") print "-"; else print ((v + 0 <= l + 0) ? "✓" : "✗") }'
}
label() { case "$1" in pgdr) echo "pgdr (defaults)" ;; pgdr-fast) echo "pgdr (lease_ttl $FAST_TTL)" ;; patroni-default) echo "Patroni (ttl 30, loop 10, retry 10)" ;; patroni-aggressive) echo "Patroni (ttl $AG_TTL, loop $AG_LOOP, retry $AG_RETRY)" ;; *) echo "$1" ;; esac; }
{
  cat "$BENCH/results.head"
  echo "versions:   pgdr $PGDR_VERSION, PostgreSQL $PG_VERSION, Patroni $PATRONI_VERSION (Debian), etcd $ETCD_VERSION (Debian), $(go version | cut -d' ' -f3)"
  echo "pgdr:       scripts/lab.sh: lease_ttl 5s, safety_margin 1s, failover loop 1s (defaults), agents' health.interval 1s;"
  echo "            pgdr-fast: the same with lease_ttl $FAST_TTL;"
  echo "            failover.min_interval $MIN_INTERVAL (lowered so that repetitions are not refused as flapping)"
  echo "Patroni:    etcd3 API, use_pg_rewind, one etcd; aggressive = ttl $AG_TTL, loop_wait $AG_LOOP, retry_timeout $AG_RETRY (loop_wait + 2 x retry_timeout <= ttl)"
  echo "probe:      an INSERT on every node every 20 ms over kept connections (connect timeout 200 ms); acknowledged = COMMIT returned"
  [ "$USE_HAPROXY" != 1 ] || echo "            pgdr: and the same through HAProxy running deploy/haproxy/haproxy.cfg (addresses rewritten only)"
  echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at end); $REPS repetitions per system and mode, each bounded by ${CAP} s"
  echo
  printf '%-38s | %-30s | %-30s\n' "" "unplanned failover (s)" "switchover unavailability (s)"
  printf '%-38s | %8s %15s %3s   | %8s %15s %3s\n' "system" median "min–max" n median "min–max" n
  printf '%s\n' "$(printf '%.0s-' {1..106})"
  for sys in pgdr pgdr-fast patroni-aggressive patroni-default; do
    [[ " $SYSTEMS " == *" $sys "* ]] || continue
    printf '%-38s | %s   | %s\n' "$(label "$sys")" "$(cell "${FO[$sys]:-}")" "$(cell "${SW[$sys]:-}")"
  done
  echo
  fo_p=$(median <<< "${FO[pgdr]:-}"); sw_p=$(median <<< "${SW[pgdr]:-}")
  fo_a=$(median <<< "${FO[patroni-aggressive]:-}"); sw_a=$(median <<< "${SW[patroni-aggressive]:-}")
  fo_d=$(median <<< "${FO[patroni-default]:-}"); sw_d=$(median <<< "${SW[patroni-default]:-}")
  r_a=$(ratio "$fo_p" "$fo_a"); r_d=$(ratio "$fo_p" "$fo_d")
  printf '  %-44s %8s   %-14s %s\n' "pgdr unplanned failover, median" "$fo_p s" "target <= 5 s" "$(mark "$fo_p" 5)"
  printf '  %-44s %8s   %-14s %s\n' "pgdr / Patroni-aggressive, unplanned" "$r_a" "target <= 0.5" "$(mark "$r_a" 0.5)"
  printf '  %-44s %8s\n' "pgdr / Patroni-default, unplanned" "$r_d"
  fo_f=$(median <<< "${FO[pgdr-fast]:-}")
  printf '  %-44s %8s   %s\n' "pgdr (lease_ttl $FAST_TTL) / Patroni-aggressive" "$(ratio "$fo_f" "$fo_a")" "(both at aggressive settings)"
  for sys in pgdr pgdr-fast; do
    [ -n "${DEC[$sys]:-}" ] || continue
    printf '  %-44s %8s   %s\n' "$sys: kill -> leader's decision, median" "$(median <<< "${DEC[$sys]}") s" "(lease running out + tick: $(vmin <<< "${DEC[$sys]}")–$(vmax <<< "${DEC[$sys]}") s)"
    printf '  %-44s %8s   %s\n' "$sys: decision -> first write, median" "$(median <<< "${PROMO[$sys]}") s" "(pgdr's promotion path: $(vmin <<< "${PROMO[$sys]}")–$(vmax <<< "${PROMO[$sys]}") s)"
  done
  for sys in pgdr pgdr-fast; do
    [ -n "${HFO[$sys]:-}" ] || continue
    printf '  %-44s %8s   %s\n' "$sys: kill -> first write via HAProxy, median" "$(median <<< "${HFO[$sys]}") s" "($(vmin <<< "${HFO[$sys]}")–$(vmax <<< "${HFO[$sys]}") s)"
    [ -z "${HEXTRA[$sys]:-}" ] ||
      printf '  %-44s %8s   %-14s %s\n' "$sys: HAProxy adds (via - direct), median" "$(median <<< "${HEXTRA[$sys]}") s" "target <= 0.5 s" "$(mark "$(median <<< "${HEXTRA[$sys]}")" 0.5) ($(vmin <<< "${HEXTRA[$sys]}")–$(vmax <<< "${HEXTRA[$sys]}") s)"
    [ -z "${HSW[$sys]:-}" ] ||
      printf '  %-44s %8s   %s\n' "$sys: switchover via HAProxy, median" "$(median <<< "${HSW[$sys]}") s" "(no write through HAProxy; $(vmin <<< "${HSW[$sys]}")–$(vmax <<< "${HSW[$sys]}") s)"
  done
  printf '  %-44s %8s   %-14s %s\n' "pgdr switchover unavailability, median" "$sw_p s" "target <= 1 s" "$(mark "$sw_p" 1)"
  printf '  %-44s %8s\n' "pgdr / Patroni-aggressive, switchover" "$(ratio "$sw_p" "$sw_a")"
  printf '  %-44s %8s\n' "pgdr / Patroni-default, switchover" "$(ratio "$sw_p" "$sw_d")"
  echo
  echo "unplanned failover = kill -9 of the primary's postmaster and HA daemon -> first acknowledged write on another node;"
  echo "switchover unavailability = last acknowledged write on the old primary -> first on the new one. n! = some"
  echo "repetitions got no new primary within ${CAP} s (counted as ${CAP} s)."
  echo
  echo "per repetition:"
  sed 's/^/  /' "$DETAIL"
  for sys in $SYSTEMS; do [ -z "${NOTE[$sys]:-}" ] || echo "note $sys: ${NOTE[$sys]}"; done
  echo "logs and probe output in $BENCH/"
  echo "total bench time: $((SECONDS - RUN_START)) s"
} > "$BENCH/results.txt"
echo
cat "$BENCH/results.txt"
