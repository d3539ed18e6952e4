#!/usr/bin/env bash
# make bench-coordinator: coordinator load and failover benchmark.
#
# Prints figures; asserts nothing (the targets are printed next to them).
# Everything runs on this machine: three pgdr-coordinator processes on
# 127.0.0.1 (Raft, gRPC API with TLS, /metrics, gossip with profile local)
# and the simulated agents (scripts/bench/coordload) share its CPUs, so the
# load generator competes with the coordinators for CPU.
#
# For each N in BENCH_AGENTS (default "1000 5000"), on a fresh 3-node
# cluster under $PGDR_BENCH_DIR/nN:
#   1. coordload starts N agents over N/100 clusters (one primary and 99
#      replicas each), spreading their first connection over BENCH_RAMP s
#      (default N/500). Each agent: Leader, Register (a Raft write the first
#      time), Report stream with a HealthReport every second (Time = now,
#      own random phase), Commands stream answering the opening ping, and
#      pgdr-agent's reconnection logic (ask again who leads; backoff 100 ms
#      doubling to 2 s).
#   2. Once the leader holds all 2N streams (bounded wait), BENCH_WARMUP s
#      (5) later the steady window of BENCH_SECONDS (60) s is measured on
#      the leader: CPU as cores = delta(utime+stime) of /proc/PID/stat over
#      the window; peak RSS = VmHWM at its end (so it includes the
#      registration burst); report delay p50/p99 (agent sample time -> leader
#      receipt) from pgdr_coordinator_report_delay_seconds, taking the
#      difference of the histogram scraped at the start and at the end of the
#      window, each quantile interpolated linearly inside its bucket (as
#      Prometheus' histogram_quantile does); reports/s from
#      pgdr_coordinator_reports_total. The followers' and coordload's CPU over
#      the same window are shown for context. Scrape cost: while the load
#      runs, the leader's /metrics is scraped every BENCH_SCRAPE_INTERVAL
#      (15) s of the window and once more at its end, as Prometheus would
#      (so the window's CPU and report delay include them); the duration
#      (curl's time_total) of these and of the two scrapes that bound the
#      window is printed as median and max, with the response size.
#      BENCH_SCRAPE_INTERVAL=0: no scrape inside the window (only the two
#      bounding it), to compare CPU and p99 without.
#   3. The leader is killed with SIGKILL. Re-election = time until both
#      survivors' /health name the same new leader (polled every 20 ms).
#      Agents back = time until the new leader holds all 2N streams and
#      pgdr_coordinator_reports_total rises at >= 95% of N/s over the next
#      2 s (/metrics polled every 200 ms; should leadership move again
#      meanwhile, the final leader counts and the moves are reported). Both
#      from the kill. A row whose leader changed during the steady window is
#      flagged: its figures include an unplanned failover.
#
# Environment: PGDR_BENCH_DIR (/tmp/pgdr-bench-coordinator), BENCH_AGENTS
# ("1000 5000"), BENCH_SECONDS (60), BENCH_RAMP (N/500 s), BENCH_WARMUP (5),
# BENCH_PORT_BASE (first of 15 consecutive free ports searched from here,
# 26100), BENCH_CONNECT_TIMEOUT (180 s), BENCH_FAILOVER_TIMEOUT (60 s),
# BENCH_LOG_LEVEL (info, the coordinators' log_level), BENCH_COORDINATOR (the
# pgdr-coordinator binary to run, default bin/pgdr-coordinator), BENCH_RAFT
# (extra raft: settings, ";"-separated, e.g. "leader_lease_timeout: 1s";
# default none: the coordinator's defaults, heartbeat and election 500 ms,
# lease 250 ms), BENCH_SCRAPE_INTERVAL (15 s; 0: none), BENCH_PROFILE (1: each coordinator serves Go's profiles
# on a loopback port (PGDR_PPROF_LISTEN) and the leader's CPU is profiled
# over the steady window into $PGDR_BENCH_DIR/nN/leader.cpu.pprof, read
# with go tool pprof -top bin/pgdr-coordinator FILE; profiling costs the
# leader a few percent of CPU; default 0).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${PGDR_BENCH_DIR:-/tmp/pgdr-bench-coordinator}
AGENT_COUNTS=${BENCH_AGENTS:-1000 5000}
WINDOW=${BENCH_SECONDS:-60}
WARMUP=${BENCH_WARMUP:-5}
PORT_BASE=${BENCH_PORT_BASE:-26100}
CONNECT_TIMEOUT=${BENCH_CONNECT_TIMEOUT:-180}
FAILOVER_TIMEOUT=${BENCH_FAILOVER_TIMEOUT:-60}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
PROFILE=${BENCH_PROFILE:-0}
SCRAPE_INTERVAL=${BENCH_SCRAPE_INTERVAL:-15}
# BENCH_RAFT: extra raft settings, e.g. "leader_lease_timeout: 1s; heartbeat_timeout: 1s"
RAFT_EXTRA=""
if [ -n "${BENCH_RAFT:-}" ]; then
  IFS=';' read -ra _kv <<< "$BENCH_RAFT"
  for _e in "${_kv[@]}"; do _e=$(echo "$_e" | sed 's/^ *//; s/ *$//'); [ -n "$_e" ] && RAFT_EXTRA+="  $_e"$'\n'; done
fi
HZ=$(getconf CLK_TCK)
RUN_START=$SECONDS

say() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
now_ns() { echo "${EPOCHREALTIME/./}000"; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN{printf "%.1f", (b-a)/1e9}'; }

# ---------------------------------------------------------------- clean-up
# Every process this script starts is recorded (pid and the path its
# command line must contain); the EXIT trap ends exactly those.
REG_PID="$BENCH.pid.list"
stop_pid() { # stop_pid PID [grace seconds]
  local pid=$1 grace=${2:-15} dl
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || return 0
  dl=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $dl ]; do sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid mark
  if [ -f "$REG_PID" ]; then
    while read -r pid mark; do
      # Only a process that still runs what this script started (a pid may
      # have been reused since a previous, hard-killed run).
      if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark"; then
        stop_pid "$pid" 10
      fi
    done < "$REG_PID"
  fi
  rm -f "$REG_PID"
}
register_pid() { echo "$1 $2" >> "$REG_PID"; }
cleanup # a previous run that was killed hard may have left processes behind
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ prerequisites
for t in curl jq ss; do command -v $t >/dev/null || { say "$t is required"; exit 1; }; done
[ -x bin/pgdr-coordinator ] && [ -x bin/pgdrctl ] || make build
rm -rf "$BENCH"
mkdir -p "$BENCH"
COORD="$BENCH/pgdr-coordinator"
cp "${BENCH_COORDINATOR:-bin/pgdr-coordinator}" "$COORD"
say "building coordload"
go build -o "$BENCH/coordload" ./scripts/bench/coordload
LOAD="$BENCH/coordload"

bin/pgdrctl tls init --dir "$BENCH/tls" --coordinators c1,c2,c3 >/dev/null
head -c 32 /dev/urandom | base64 > "$BENCH/gossip.key"
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$SECRET" > "$BENCH/agent.token"
# coordload simulates every agent of every cluster through one connection
# pool: an agent token acts for one member only, so the load generator
# uses a coordinator-role token (trusted for every member).
printf -- '- {name: bench-agents, role: coordinator, sha256: %s}\n' "$(printf '%s' "$SECRET" | sha256sum | cut -d' ' -f1)" > "$BENCH/tokens.yaml"
chmod 600 "$BENCH/gossip.key" "$BENCH/agent.token" "$BENCH/tokens.yaml"

# ------------------------------------------------------------------- ports
port_free() { [ -z "$(ss -Htanu "( sport = :$1 )" 2>/dev/null)" ]; }
find_ports() { # 15 consecutive free ports from PORT_BASE
  local b=$PORT_BASE i ok
  while [ "$b" -lt 65000 ]; do
    ok=1
    for ((i = 0; i < 15; i++)); do port_free $((b + i)) || { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$b"; return 0; }
    b=$((b + 15))
  done
  return 1
}

# ----------------------------------------------------------------- cluster
NAMES=(c1 c2 c3)
declare -A RAFT API HTTP GOSSIP PPROF PID
region() { [ "$1" = c2 ] && echo eu-west-1 || echo us-east-1; }

start_cluster() { # start_cluster DIR
  local dir=$1 base i n boot="" join
  base=$(find_ports) || { say "no 15 free consecutive ports from $PORT_BASE"; return 1; }
  for i in 0 1 2; do
    n=${NAMES[$i]}
    RAFT[$n]=127.0.0.1:$((base + i * 4)); API[$n]=127.0.0.1:$((base + i * 4 + 1))
    HTTP[$n]=127.0.0.1:$((base + i * 4 + 2)); GOSSIP[$n]=127.0.0.1:$((base + i * 4 + 3))
    PPROF[$n]=127.0.0.1:$((base + 12 + i))
    boot+="  - {name: $n, raft_address: \"${RAFT[$n]}\", api_address: \"${API[$n]}\", region: $(region "$n")}"$'\n'
  done
  for n in "${NAMES[@]}"; do
    mkdir -p "$dir/$n"
    join=""
    [ "$n" != c1 ] && join="  join: [\"${GOSSIP[c1]}\"]"$'\n'
    cat > "$dir/$n/coordinator.yaml" <<YAML
name: $n
region: $(region "$n")
data_dir: $dir/$n/data
log_level: $LOG_LEVEL
raft:
  bind: "${RAFT[$n]}"
${RAFT_EXTRA}api:
  listen: "${API[$n]}"
http:
  listen: "${HTTP[$n]}"
gossip:
  bind: "${GOSSIP[$n]}"
  key_file: $BENCH/gossip.key
  profile: local
${join}tls:
  ca_file: $BENCH/tls/ca.crt
  cert_file: $BENCH/tls/$n.crt
  key_file: $BENCH/tls/$n.key
auth:
  tokens_file: $BENCH/tokens.yaml
bootstrap:
$boot
YAML
    if [ "$PROFILE" = 1 ]; then
      PGDR_PPROF_LISTEN=${PPROF[$n]} "$COORD" run --bootstrap --config "$dir/$n/coordinator.yaml" > "$dir/$n/coordinator.log" 2>&1 &
    else
      "$COORD" run --bootstrap --config "$dir/$n/coordinator.yaml" > "$dir/$n/coordinator.log" 2>&1 &
    fi
    PID[$n]=$!
    register_pid "${PID[$n]}" "$dir/$n/coordinator.yaml"
  done
}
stop_cluster() {
  local n
  for n in "${NAMES[@]}"; do [ -n "${PID[$n]:-}" ] && stop_pid "${PID[$n]}" 15; PID[$n]=""; done
}
leader_of() { curl -s -m 1 "http://${HTTP[$1]}/health" 2>/dev/null | jq -r '.leader // empty' 2>/dev/null || true; }
# wait_leader TIMEOUT: echoes the leader every running node agrees on.
wait_leader() {
  local dl=$((SECONDS + $1)) n l agreed
  while [ $SECONDS -lt $dl ]; do
    agreed=""
    for n in "${NAMES[@]}"; do
      [ -n "${PID[$n]:-}" ] || continue
      l=$(leader_of "$n")
      if [ -z "$l" ] || { [ -n "$agreed" ] && [ "$l" != "$agreed" ]; }; then agreed=""; break; fi
      agreed=$l
    done
    [ -n "$agreed" ] && [ -n "${PID[$agreed]:-}" ] && { echo "$agreed"; return 0; }
    sleep 0.2
  done
  return 1
}
metric() { # metric FILE NAME: an unlabelled sample's value
  awk -v n="$2" '$1 == n {printf "%.6f\n", $2; f=1} END {if (!f) print 0}' "$1"
}
scrape() { curl -s -m 5 "http://${HTTP[$1]}/metrics" > "$2" || : > "$2"; }
# timed_scrape NODE FILE LOG: scrape, appending "seconds bytes http_code" to LOG.
timed_scrape() {
  curl -s -m 5 -o "$2" -w '%{time_total} %{size_download} %{http_code}\n' "http://${HTTP[$1]}/metrics" >> "$3" || { : > "$2"; echo "5 0 000" >> "$3"; }
}
box_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; } # busy jiffies, all CPUs
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# hist_q BEFORE AFTER Q: quantile (ms) of the report delay observed between
# two scrapes, interpolated linearly inside the bucket.
hist_q() {
  awk -v q="$3" '
    /^pgdr_coordinator_report_delay_seconds_bucket\{/ {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
      if (FILENAME == ARGV[1]) b[le] = $2; else { a[le] = $2; order[++n] = le }
    }
    END {
      total = a["+Inf"] - b["+Inf"]
      if (total <= 0) { print "-"; exit }
      rank = q * total; pc = 0; pl = 0
      for (i = 1; i <= n; i++) {
        le = order[i]; c = a[le] - b[le]
        if (c >= rank) {
          if (le == "+Inf") { printf ">%g\n", pl * 1000; exit }
          printf "%.2f\n", (pl + (le - pl) * ((c > pc) ? (rank - pc) / (c - pc) : 0)) * 1000; exit
        }
        pc = c; pl = le
      }
    }' "$1" "$2"
}

declare -A R # results, keyed "N:field"

run_round() {
  local n_agents=$1 dir="$BENCH/n$1" ai0 ai1 b0 b1 ramp clusters leader lpid lp load_pid dl streams t0 t1 c0 c1 f0 f1 l0 l1 n s kill_ns survivors=()
  ramp=${BENCH_RAMP:-$(( (n_agents + 499) / 500 ))}
  clusters=$(( (n_agents + 99) / 100 ))
  mkdir -p "$dir"
  say "N=$n_agents: starting 3 coordinators"
  start_cluster "$dir" || return 0
  leader=$(wait_leader 60) || { say "N=$n_agents: no leader within 60 s"; R[$n_agents:note]="no leader at start"; stop_cluster; return 0; }
  say "N=$n_agents: leader $leader; starting $n_agents agents in $clusters clusters over ${ramp}s"
  local addrs="${API[c1]},${API[c2]},${API[c3]}"
  local bound=$((ramp + CONNECT_TIMEOUT + WARMUP + WINDOW + FAILOVER_TIMEOUT + 60))
  "$LOAD" --addresses "$addrs" --ca "$BENCH/tls/ca.crt" --token-file "$BENCH/agent.token" \
    --agents "$n_agents" --clusters "$clusters" --interval 1s --ramp "${ramp}s" --duration "${bound}s" \
    > "$dir/coordload.json" 2> "$dir/coordload.log" &
  load_pid=$!
  register_pid "$load_pid" "$BENCH/coordload"

  # All 2N streams on the leader (bounded).
  local tc; tc=$(now_ns)
  dl=$((SECONDS + ramp + CONNECT_TIMEOUT))
  streams=0
  while [ $SECONDS -lt $dl ] && kill -0 "$load_pid" 2>/dev/null; do
    scrape "$leader" "$dir/m.now"
    streams=$(metric "$dir/m.now" pgdr_coordinator_agent_streams); streams=${streams%.*}
    [ "$streams" -ge $((2 * n_agents)) ] && break
    sleep 0.5
  done
  R[$n_agents:connect]=$(secs_since "$tc")
  if [ "$streams" -lt $((2 * n_agents)) ]; then
    say "N=$n_agents: only $streams of $((2 * n_agents)) streams open on $leader after ${R[$n_agents:connect]} s; measuring anyway"
    R[$n_agents:note]="only $streams/$((2 * n_agents)) streams"
  else
    say "N=$n_agents: all $((2 * n_agents)) streams open on $leader after ${R[$n_agents:connect]} s; warm-up ${WARMUP}s, window ${WINDOW}s"
  fi
  sleep "$WARMUP"

  # Steady window.
  lpid=${PID[$leader]}
  local followers=() fpids=()
  for n in "${NAMES[@]}"; do [ "$n" != "$leader" ] && { followers+=("$n"); fpids+=("${PID[$n]}"); }; done
  local el0 el1; el0=$(cat "$dir"/c?/coordinator.log | grep -cE "became raft leader|stepping down" || true)
  local prof_pid=""
  if [ "$PROFILE" = 1 ]; then
    curl -s -m $((WINDOW + 30)) -o "$dir/leader.cpu.pprof" "http://${PPROF[$leader]}/debug/pprof/profile?seconds=$WINDOW" &
    prof_pid=$!
  fi
  local slog="$dir/scrapes.txt" el=0 st
  : > "$slog"
  timed_scrape "$leader" "$dir/m.start" "$slog"
  t0=$(now_ns); c0=$(cpu_ticks "$lpid"); l0=$(cpu_ticks "$load_pid"); b0=$(box_ticks)
  f0=$(( $(cpu_ticks "${fpids[0]}") + $(cpu_ticks "${fpids[1]}") ))
  # The window, scraped every SCRAPE_INTERVAL s and at its end.
  while [ "$el" -lt "$WINDOW" ]; do
    st=$WINDOW
    [ "$SCRAPE_INTERVAL" -gt 0 ] && st=$(( SCRAPE_INTERVAL < WINDOW - el ? SCRAPE_INTERVAL : WINDOW - el ))
    sleep "$st"; el=$((el + st))
    [ "$SCRAPE_INTERVAL" -gt 0 ] && timed_scrape "$leader" "$dir/m.w$el" "$slog"
  done
  t1=$(now_ns); c1=$(cpu_ticks "$lpid"); l1=$(cpu_ticks "$load_pid"); b1=$(box_ticks)
  f1=$(( $(cpu_ticks "${fpids[0]}") + $(cpu_ticks "${fpids[1]}") ))
  timed_scrape "$leader" "$dir/m.end" "$slog"
  if [ -n "$prof_pid" ]; then
    wait "$prof_pid" || say "N=$n_agents: the leader's CPU profile failed"
    say "N=$n_agents: leader CPU profile: go tool pprof -top $COORD $dir/leader.cpu.pprof"
  fi
  el1=$(cat "$dir"/c?/coordinator.log | grep -cE "became raft leader|stepping down" || true)
  local dt; dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print (b-a)/1e9}')
  R[$n_agents:cpu]=$(awk -v a="$c0" -v b="$c1" -v dt="$dt" -v hz="$HZ" 'BEGIN{printf "%.3f", (b-a)/hz/dt}')
  R[$n_agents:fcpu]=$(awk -v a="$f0" -v b="$f1" -v dt="$dt" -v hz="$HZ" 'BEGIN{printf "%.3f", (b-a)/hz/dt/2}')
  R[$n_agents:other]=$(awk -v b="$((b1 - b0))" -v c="$((c1 - c0 + f1 - f0 + l1 - l0))" -v dt="$dt" -v hz="$HZ" 'BEGIN{o=(b-c)/hz/dt; if (o<0) o=0; printf "%.2f", o}')
  R[$n_agents:lcpu]=$(awk -v a="$l0" -v b="$l1" -v dt="$dt" -v hz="$HZ" 'BEGIN{printf "%.3f", (b-a)/hz/dt}')
  R[$n_agents:rss]=$(awk '/^VmHWM:/{printf "%.0f", $2/1024}' "/proc/$lpid/status" 2>/dev/null || echo -)
  R[$n_agents:rssnow]=$(awk '/^VmRSS:/{printf "%.0f", $2/1024}' "/proc/$lpid/status" 2>/dev/null || echo -)
  R[$n_agents:p50]=$(hist_q "$dir/m.start" "$dir/m.end" 0.50)
  R[$n_agents:p99]=$(hist_q "$dir/m.start" "$dir/m.end" 0.99)
  R[$n_agents:mean]=$(awk -v a="$(metric "$dir/m.start" pgdr_coordinator_report_delay_seconds_sum)" -v b="$(metric "$dir/m.end" pgdr_coordinator_report_delay_seconds_sum)" \
    -v x="$(metric "$dir/m.start" pgdr_coordinator_report_delay_seconds_count)" -v y="$(metric "$dir/m.end" pgdr_coordinator_report_delay_seconds_count)" \
    'BEGIN{ if (y > x) printf "%.2f", (b-a)/(y-x)*1000; else print "-" }')
  R[$n_agents:rate]=$(awk -v a="$(metric "$dir/m.start" pgdr_coordinator_reports_total)" -v b="$(metric "$dir/m.end" pgdr_coordinator_reports_total)" -v dt="$dt" 'BEGIN{printf "%.0f", (b-a)/dt}')
  # CPU per report: leader CPU seconds over the window / reports received in it.
  R[$n_agents:cpurep]=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v x="$(metric "$dir/m.start" pgdr_coordinator_reports_total)" -v y="$(metric "$dir/m.end" pgdr_coordinator_reports_total)" \
    'BEGIN{ if (y > x) printf "%.1f", (b-a)/hz/(y-x)*1e6; else print "-" }')
  # Scrape cost: every timed scrape of the round (the two bounding the window and those inside it).
  R[$n_agents:scrapes]=$(awk '{n++; d[n]=$1*1000; if ($1*1000 > mx) mx=$1*1000; if ($3 != 200) bad++; sz=$2}
    END { if (!n) { print "-"; exit }
          for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (d[j] < d[i]) { t=d[i]; d[i]=d[j]; d[j]=t }
          med = (n % 2) ? d[(n+1)/2] : (d[n/2] + d[n/2+1]) / 2
          printf "%d %.1f %.1f %d %d\n", n, med, mx, sz, bad }' "$slog")
  R[$n_agents:series]=$(grep -vc '^#' "$dir/m.end" || true)
  R[$n_agents:gor]=$(metric "$dir/m.end" go_goroutines | cut -d. -f1)
  R[$n_agents:load]=$(cut -d' ' -f1 /proc/loadavg)
  s=$(leader_of "$leader")
  if [ "$s" != "$leader" ] || [ "$el1" != "$el0" ]; then
    say "N=$n_agents: leadership moved during the window ($((el1 - el0)) leader elections or step-downs; leader was $leader, now ${s:-none})"
    R[$n_agents:note]="${R[$n_agents:note]:+${R[$n_agents:note]}; }UNPLANNED: $((el1 - el0)) leader election(s)/step-down(s) during the steady window (leader $leader -> ${s:-none}); its figures include them"
  fi
  say "N=$n_agents: leader CPU ${R[$n_agents:cpu]} cores, VmHWM ${R[$n_agents:rss]} MiB, ${R[$n_agents:rate]} reports/s, delay p50 ${R[$n_agents:p50]} ms p99 ${R[$n_agents:p99]} ms"

  # Failover: of the leader the survivors agree on now.
  if [ "$s" != "$leader" ]; then
    leader=$(wait_leader 30) || { say "N=$n_agents: no stable leader to kill"; R[$n_agents:note]="${R[$n_agents:note]:+${R[$n_agents:note]}; }no leader to kill"; stop_pid "$load_pid" 20; stop_cluster; return 0; }
    lpid=${PID[$leader]}
    followers=()
    for n in "${NAMES[@]}"; do [ "$n" != "$leader" ] && followers+=("$n"); done
  fi
  survivors=()
  for n in "${followers[@]}"; do survivors+=("${HTTP[$n]}"); done
  say "N=$n_agents: kill -9 leader $leader (pid $lpid)"
  ai0=$(curl -s -m 2 "http://${HTTP[$leader]}/health" | jq -r '.applied_index // 0' 2>/dev/null || echo 0)
  kill_ns=$(now_ns)
  # (the reaping is silenced: bash would report the killed job on stderr)
  { kill -9 "$lpid"; wait "$lpid"; } 2>/dev/null || true
  "$LOAD" --watch --http "$(IFS=,; echo "${survivors[*]}")" --dead "$leader" --since "$kill_ns" \
    --agents "$n_agents" --interval 1s --timeout "${FAILOVER_TIMEOUT}s" > "$dir/failover.json" 2> "$dir/failover.log" || true
  PID[$leader]=""
  R[$n_agents:elect]=$(jq -r '.reelection_s // empty | . * 1000 | round / 1000' "$dir/failover.json" 2>/dev/null || true)
  R[$n_agents:back]=$(jq -r '.agents_reconnected_s // empty | . * 1000 | round / 1000' "$dir/failover.json" 2>/dev/null || true)
  R[$n_agents:newleader]=$(jq -r '.final_leader // .new_leader // "-"' "$dir/failover.json" 2>/dev/null || echo -)
  local moves; moves=$(jq -r '.leader_changes_after_reelection // 0' "$dir/failover.json" 2>/dev/null || echo 0)
  [ "${moves:-0}" -gt 0 ] && R[$n_agents:note]="${R[$n_agents:note]:+${R[$n_agents:note]}; }leadership moved $moves more time(s) after the re-election"
  local ferr; ferr=$(jq -r '.error // empty' "$dir/failover.json" 2>/dev/null || true)
  [ -n "$ferr" ] && { say "N=$n_agents: failover: $ferr"; R[$n_agents:note]="${R[$n_agents:note]:+${R[$n_agents:note]}; }$ferr"; }
  say "N=$n_agents: new leader ${R[$n_agents:newleader]}: re-election ${R[$n_agents:elect]:-?} s, agents back ${R[$n_agents:back]:-?} s"

  sleep 2
  ai1=$(curl -s -m 2 "http://${HTTP[${R[$n_agents:newleader]}]:-}/health" 2>/dev/null | jq -r '.applied_index // 0' 2>/dev/null || echo 0)
  R[$n_agents:applies]=$(( ${ai1:-0} - ${ai0:-0} ))
  stop_pid "$load_pid" 20
  R[$n_agents:regp50]=$(jq -r '.register_p50_ms // "-"' "$dir/coordload.json" 2>/dev/null || echo -)
  R[$n_agents:regp99]=$(jq -r '.register_p99_ms // "-"' "$dir/coordload.json" 2>/dev/null || echo -)
  R[$n_agents:lerr]=$(jq -r '.errors // "-"' "$dir/coordload.json" 2>/dev/null || echo -)
  R[$n_agents:lsent]=$(jq -r '.reports_sent // "-"' "$dir/coordload.json" 2>/dev/null || echo -)
  R[$n_agents:allconn]=$(jq -r '.all_connected_after_s // "-" | if type == "number" then (. * 10 | round / 10) else . end' "$dir/coordload.json" 2>/dev/null || echo -)
  stop_cluster
}

# ---------------------------------------------------------------------- run
{
  echo "pgdr coordinator benchmark — $(date -u +%FT%TZ)"
  echo "machine:    $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -m | awk '/^Mem:/{printf "%.1f GiB", $2/1024}') memory, kernel $(uname -r)"
  echo "versions:   $("$COORD" version), $(go version | cut -d' ' -f3)"
  echo "set-up:     3 coordinators + the simulated agents (coordload) on this one machine, 127.0.0.1, TLS + bearer token;"
  echo "            they share its $(nproc) CPUs, so the figures include the load generator's competition for CPU"
} > "$BENCH/results.head"
cat "$BENCH/results.head" >&2

for N in $AGENT_COUNTS; do run_round "$N"; done

# -------------------------------------------------------------------- report
mark() { # mark VALUE OP LIMIT: ✓ or ✗ (- when no value)
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN{
    if (v == "" || v == "-" || v ~ /^>/) { if (v ~ /^>/) print "✗"; else print "-"; exit }
    ok = (op == "<") ? (v + 0 < l + 0) : (v + 0 <= l + 0); print ok ? "✓" : "✗" }'
}
{
  cat "$BENCH/results.head"
  echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
  [ -n "${BENCH_RAFT:-}" ] && echo "raft:       $BENCH_RAFT (BENCH_RAFT)"
  echo "window:     ${WINDOW} s steady state, ${WARMUP} s after the leader held all streams; agents report every 1 s, 100 per cluster"
  if [ "$SCRAPE_INTERVAL" -gt 0 ]; then
    echo "scraping:   the leader's /metrics every ${SCRAPE_INTERVAL} s of the window and at its end (included in its CPU and delays)"
  else
    echo "scraping:   none inside the window (BENCH_SCRAPE_INTERVAL=0); only the scrapes just before and after it"
  fi
  echo
  printf '%7s | %-9s %8s %7s | %-10s %-10s %7s | %-10s %9s | %6s %6s %6s | %8s %8s %7s\n' \
    agents "CPU cores" "RSS MiB" "rep/s" "p50 ms" "p99 ms" "mean" "re-elect s" "agents s" "fol." "load" "other" "reg p50" "reg p99" "conn s"
  printf '%s\n' "$(printf '%.0s-' {1..150})"
  for N in $AGENT_COUNTS; do
    flag=""
    [[ "${R[$N:note]:-}" == *UNPLANNED* ]] && flag="!"
    printf '%7s | %-9s %8s %7s | %-10s %-10s %7s | %-10s %9s | %6s %6s %6s | %8s %8s %7s\n' "$N$flag" \
      "${R[$N:cpu]:--} $(mark "${R[$N:cpu]:-}" '<' 0.5)" "${R[$N:rss]:--}" "${R[$N:rate]:--}" \
      "${R[$N:p50]:--}" "${R[$N:p99]:--} $(mark "${R[$N:p99]:-}" '<' 50)" "${R[$N:mean]:--}" \
      "${R[$N:elect]:--} $(mark "${R[$N:elect]:-}" '<' 2)" "${R[$N:back]:--}" \
      "${R[$N:fcpu]:--}" "${R[$N:lcpu]:--}" "${R[$N:other]:--}" "${R[$N:regp50]:--}" "${R[$N:regp99]:--}" "${R[$N:allconn]:--}"
  done
  echo
  echo "targets: 5,000 agents at < 0.5 core on the leader; report p99 < 50 ms; re-election < 2 s (✓/✗ against every row;"
  echo "         a ! after the agent count: the leader changed during the steady window, see the notes below)"
  echo "columns: CPU cores = leader utime+stime over the window; RSS MiB = leader VmHWM (peak, includes registration);"
  echo "         rep/s = leader reports_total rate; p50/p99/mean ms = report delay (sample time -> leader receipt), window only;"
  echo "         re-elect s = kill -9 of the leader -> both survivors name the same new leader (/health every 20 ms);"
  echo "         agents s = kill -> new leader holds all 2N streams and reports rise at >= 95% of N/s over the next 2 s;"
  echo "         fol. = mean CPU cores of each follower; load = coordload's CPU cores; other = CPU cores used by everything
         else on the machine during the window (/proc/stat busy minus the four processes above);"
  echo "         reg p50/p99 = first Register latency in ms seen by the agents (a Raft write each), during the ramp;"
  echo "         conn s = coordload start -> all N agents had both streams open"
  for N in $AGENT_COUNTS; do
    echo "N=$N: 1-min load average at window end ${R[$N:load]:--}; leader CPU per report ${R[$N:cpurep]:--} µs (CPU seconds over the window / reports received)"
    read -r sn smed smax ssz sbad <<< "${R[$N:scrapes]:--}"
    if [ "${sn:--}" != "-" ]; then
      echo "N=$N: /metrics scrapes of the leader: $sn, duration median $smed ms, max $smax ms $(mark "$smax" '<' 100) (target < 100 ms),"
      echo "        response $(awk -v b="$ssz" 'BEGIN{printf "%.1f KiB", b/1024}') (${R[$N:series]:--} samples)$( [ "${sbad:-0}" -gt 0 ] && echo ", $sbad failed" || true)"
    fi
    [ -n "${R[$N:note]:-}" ] && echo "note N=$N: ${R[$N:note]}"
    echo "N=$N: leader VmRSS at window end ${R[$N:rssnow]:--} MiB, ${R[$N:gor]:--} goroutines; agents sent ${R[$N:lsent]:--} reports, ${R[$N:lerr]:--} session errors (mostly the failover);"
    echo "        Raft entries applied from the kill to 2 s after the agents were back: ${R[$N:applies]:--}; logs and JSON in $BENCH/n$N/"
  done
  echo "total bench time: $((SECONDS - RUN_START)) s"
} > "$BENCH/results.txt"
echo
cat "$BENCH/results.txt"
