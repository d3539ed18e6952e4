#!/usr/bin/env bash
# scripts/lab.sh — the local pgdr lab on loopback, used by `make demo` and the
# end-to-end tests.
#
#   scripts/lab.sh up       build what is missing, start everything, wait until healthy
#   scripts/lab.sh down     stop everything the lab started; no-op without a lab
#   scripts/lab.sh status   pgdrctl status against the lab (extra args passed on)
#   scripts/lab.sh env      print the exports pgdrctl needs:  eval "$(scripts/lab.sh env)"
#   scripts/lab.sh ports    print the port map
#   scripts/lab.sh start-coordinator NAME   start one stopped (or killed) coordinator again
#   scripts/lab.sh start-agent NAME         start one stopped (or killed) agent again
#   scripts/lab.sh install-bins DIR         replace the lab's binaries by DIR's (as a package
#                                           upgrade does: running processes keep the old ones)
#   scripts/lab.sh restart-coordinator NAME stop one coordinator (SIGTERM) and start it again
#   scripts/lab.sh restart-agent NAME       stop one agent (SIGTERM) and start it again; its
#                                           PostgreSQL keeps running
#
# What `up` starts, under ${PGDR_LAB_DIR:-/tmp/pgdr-lab}:
#   3 coordinators  c1 (us-east-1), c2 (eu-west-1), c3 (us-west-2)   in <dir>/cN/
#                   one per region, so that losing any one region keeps
#                   quorum (PGDR_LAB_COORDINATOR_REGIONS; docs/regions.md)
#   PostgreSQL 15   pg-a1 primary (us-east-1), streaming replicas
#                   pg-a2 (us-east-1) and pg-b1 (eu-west-1)           in <dir>/pg-*/
#   the status page: every coordinator serves https://127.0.0.1:<ui port>/ui/
#                   (`ports` lists them; log in with the token in <dir>/read.token)
#   an agent daemon next to each PostgreSQL (health.interval 1s), reporting to
#   the coordinators with its client certificate, gossip joined; WAL archived
#   through `pgdr-agent wal-push` into an encrypted file repository <dir>/repo.
#
# Environment:
#   PGDR_LAB_DIR        the lab's directory (default /tmp/pgdr-lab); when run as
#                       root it must be traversable by the postgres user
#   PGDR_LAB_PORT_BASE  every port is base+offset, all on 127.0.0.1 (default 26000;
#                       the lab uses base+1 .. base+69, see `ports`)
#   PGDR_BIN            directory with prebuilt pgdr-agent, pgdr-coordinator and
#                       pgdrctl (default: the repository's bin/, built by `make build`
#                       when a binary is missing)
#   PGBIN               PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PGDR_LAB_TIMEOUT    seconds `up` waits for a healthy lab (default 90)
#   PGDR_LAB_WEBHOOK_URL     when set, every coordinator posts its notifications
#                       (failover, switchover, rejoin...) to this URL
#   PGDR_LAB_WEBHOOK_SECRET  HMAC secret for those webhooks (written to <dir>/webhook.secret)
#   PGDR_LAB_INCIDENTS_FILE  when set, a file holding the coordinators' incidents
#                       section (channels, escalation; coordinator/config), copied
#                       into every coordinator's config as it is
#   PGDR_LAB_ROLE_HOOK  when set, an absolute path run by every agent on a role
#                       change (hooks.on_role_change; it runs as the agents' user)
#   PGDR_LAB_LEASE_TTL, PGDR_LAB_SAFETY_MARGIN, PGDR_LAB_MIN_INTERVAL
#                       the coordinators' failover.lease_ttl, safety_margin and
#                       min_interval (defaults 5s, 1s and 30s)
#   PGDR_LAB_LEASE_GATED  the agents' failover.lease_gated_commits (on or
#                       off, default off; agent/commitgate)
#   PGDR_LAB_WAL_RECEIVE  node names (separated by spaces) whose agents run a
#                       WAL receiver (wal.receive, upload_interval 500ms;
#                       agent/walrecv), e.g. "pg-b1"
#   PGDR_LAB_PAUSE_BEFORE_PROMOTE  failover.pause_before_promote, for fault-
#                       injection tests only (default 0s)
#   PGDR_LAB_COORDINATOR_REGIONS  the regions of c1, c2 and c3, three names
#                       separated by spaces (default "us-east-1 eu-west-1
#                       us-west-2"; `pgdrctl status` warns about a layout
#                       where losing one region loses quorum)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${PGDR_LAB_DIR:-/tmp/pgdr-lab}
LAB=${LAB%/}
BASE=${PGDR_LAB_PORT_BASE:-26000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
TIMEOUT=${PGDR_LAB_TIMEOUT:-90}
CLUSTER=main
COORDS=(c1 c2 c3)
NODES=(pg-a1 pg-a2 pg-b1)
PRIMARY=pg-a1
MARKER=.pgdr-lab

case "$LAB" in /*) ;; *) LAB="$(pwd)/$LAB" ;; esac
case "$LAB" in *[[:space:]]*) echo "lab: PGDR_LAB_DIR must not contain spaces" >&2; exit 2 ;; esac
[ "$LAB" != / ] && [ -n "$LAB" ] || { echo "lab: PGDR_LAB_DIR must not be /" >&2; exit 2; }
[[ "$BASE" =~ ^[0-9]+$ ]] && [ "$BASE" -ge 1024 ] && [ "$BASE" -le 65400 ] ||
  { echo "lab: PGDR_LAB_PORT_BASE=$BASE: want a number in 1024..65400" >&2; exit 2; }

# ---- ports: base + offset -------------------------------------------------
# coordinator i (1..3): raft +10i+1, api +10i+2, http +10i+3, gossip +10i+4,
#                      status page (https /ui/) +10i+5
# node j (pg-a1=4, pg-a2=5, pg-b1=6): postgres +10j+1, agent http +10j+2, gossip +10j+3
# demo point-in-time restored server: +65
coord_idx() { case "$1" in c1) echo 1 ;; c2) echo 2 ;; c3) echo 3 ;; *) echo "lab: no coordinator $1" >&2; return 1 ;; esac; }
node_idx() { case "$1" in pg-a1) echo 4 ;; pg-a2) echo 5 ;; pg-b1) echo 6 ;; *) echo "lab: no node $1" >&2; return 1 ;; esac; }
port() { # port KIND NAME
  local kind=$1 name=$2 i
  case "$kind" in
    raft) i=$(coord_idx "$name"); echo $((BASE + 10 * i + 1)) ;;
    api) i=$(coord_idx "$name"); echo $((BASE + 10 * i + 2)) ;;
    http) i=$(coord_idx "$name"); echo $((BASE + 10 * i + 3)) ;;
    cgossip) i=$(coord_idx "$name"); echo $((BASE + 10 * i + 4)) ;;
    ui) i=$(coord_idx "$name"); echo $((BASE + 10 * i + 5)) ;;
    pg) i=$(node_idx "$name"); echo $((BASE + 10 * i + 1)) ;;
    health) i=$(node_idx "$name"); echo $((BASE + 10 * i + 2)) ;;
    gossip) i=$(node_idx "$name"); echo $((BASE + 10 * i + 3)) ;;
    restore) echo $((BASE + 65)) ;;
  esac
}
read -r -a COORD_REGIONS <<<"${PGDR_LAB_COORDINATOR_REGIONS:-us-east-1 eu-west-1 us-west-2}"
[ "${#COORD_REGIONS[@]}" = "${#COORDS[@]}" ] ||
  { echo "lab: PGDR_LAB_COORDINATOR_REGIONS: want ${#COORDS[@]} region names (one per coordinator: ${COORDS[*]}), got ${#COORD_REGIONS[@]}" >&2; exit 2; }
for r in "${COORD_REGIONS[@]}"; do
  [[ "$r" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || { echo "lab: PGDR_LAB_COORDINATOR_REGIONS: $r is not a valid region name" >&2; exit 2; }
done
region() {
  case "$1" in
    c[0-9]*) echo "${COORD_REGIONS[$(coord_idx "$1") - 1]}" ;;
    pg-b1) echo eu-west-1 ;;
    *) echo us-east-1 ;;
  esac
}
all_ports() {
  local c n
  for c in "${COORDS[@]}"; do port raft "$c"; port api "$c"; port http "$c"; port cgossip "$c"; port ui "$c"; done
  for n in "${NODES[@]}"; do port pg "$n"; port health "$n"; port gossip "$n"; done
}

# ---- helpers ---------------------------------------------------------------
say() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
# as_pg runs a command as the postgres user when root (PostgreSQL refuses root).
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
# as_pg_exec is as_pg for long-running daemons: setpriv execs in place, so the
# pid the daemon writes is the only process.
as_pg_exec() {
  if is_root; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

# lab_pid FILE: the pid in FILE (first line) if that process is alive and
# belongs to this lab (its command line names the lab directory).
lab_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 1
  pid=$(head -n1 "$f" 2>/dev/null | tr -dc 0-9)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$LAB/" || return 1
  echo "$pid"
}
# pid files of every lab process
pid_files() {
  local c n
  for c in "${COORDS[@]}"; do echo "$LAB/$c/coordinator.pid"; done
  for n in "${NODES[@]}"; do echo "$LAB/$n/agent.pid"; echo "$LAB/$n/pgdata/postmaster.pid"; done
}
count_running() {
  local n=0 f
  for f in $(pid_files); do lab_pid "$f" >/dev/null && n=$((n + 1)); done
  echo "$n"
}
# Stray processes of this lab: binaries run from <lab>/bin, PostgreSQL servers
# whose data directory is under the lab.
LAB_RE=$(printf '%s' "$LAB" | sed 's/[][\.*^$+?(){}|]/\\&/g')
strays() { pgrep -f -- "(^| |=)$LAB_RE/(bin/|[^ ]*pgdata)" | grep -vx "$$" || true; }

tail_logs() {
  local f
  for f in "$LAB"/c?/coordinator.log "$LAB"/pg-*/agent.log "$LAB"/pg-*/postgres.log; do
    [ -f "$f" ] || continue
    printf '\n----- %s (last 25 lines) -----\n' "$f" >&2
    tail -n 25 "$f" >&2 || true
  done
}

need_tools() {
  local missing=()
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  [ -x "$PGBIN/postgres" ] || missing+=(postgresql-15)
  if [ ${#missing[@]} -gt 0 ]; then
    is_root || die "missing: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if is_root; then id postgres >/dev/null 2>&1 || die "the postgres user is missing (install postgresql-15)"; fi
  command -v setpriv >/dev/null || die "setpriv (util-linux) is missing"
}

bins() {
  local src=${PGDR_BIN:-$ROOT/bin} b missing=0
  for b in pgdr-agent pgdr-coordinator pgdrctl; do [ -x "$src/$b" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    [ -z "${PGDR_BIN:-}" ] || die "PGDR_BIN=$PGDR_BIN lacks pgdr-agent, pgdr-coordinator or pgdrctl"
    say "building the binaries (make build)"
    make -C "$ROOT" build >/dev/null
  fi
  # The lab runs its own copies: the postgres user can execute them, a
  # rebuild does not change a running lab, and `down` finds strays by path.
  install_bins "$src"
}

# install_bins DIR: copies DIR's binaries into <lab>/bin, each under a
# temporary name renamed over the old one, so that a running process keeps
# its (old) executable until it is restarted, as after a package upgrade.
install_bins() {
  local src=$1 b
  for b in pgdr-agent pgdr-coordinator pgdrctl; do [ -x "$src/$b" ] || die "$src lacks an executable $b"; done
  mkdir -p "$LAB/bin"
  for b in pgdr-agent pgdr-coordinator pgdrctl; do
    install -m 0755 "$src/$b" "$LAB/bin/.$b.new"
    if is_root; then chown postgres: "$LAB/bin/.$b.new" 2>/dev/null || true; fi
    mv -f "$LAB/bin/.$b.new" "$LAB/bin/$b"
  done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ctl() { "$LAB/bin/pgdrctl" "$@"; }
ctl_env() {
  local addrs="" c
  for c in "${COORDS[@]}"; do addrs+="${addrs:+,}127.0.0.1:$(port api "$c")"; done
  export PGDR_ADDR=$addrs PGDR_CA=$LAB/tls/ca.crt PGDR_CERT=$LAB/tls/admin.crt PGDR_KEY=$LAB/tls/admin.key
  unset PGDR_TOKEN PGDR_TOKEN_FILE
}

# ---- up --------------------------------------------------------------------
# notifications_yaml: the coordinators' notifications section, when asked for.
notifications_yaml() {
  [ -n "${PGDR_LAB_WEBHOOK_URL:-}" ] || return 0
  printf 'notifications:\n  webhooks:\n    - url: "%s"\n      timeout: 5s\n' "$PGDR_LAB_WEBHOOK_URL"
  if [ -n "${PGDR_LAB_WEBHOOK_SECRET:-}" ]; then
    (umask 077 && printf '%s\n' "$PGDR_LAB_WEBHOOK_SECRET" >"$LAB/webhook.secret")
    printf '      secret_file: %s\n' "$LAB/webhook.secret"
  fi
}
# incidents_yaml: the coordinators' incidents section, when asked for.
incidents_yaml() {
  [ -n "${PGDR_LAB_INCIDENTS_FILE:-}" ] || return 0
  cat "$PGDR_LAB_INCIDENTS_FILE"
}
# hooks_yaml: the agents' hooks section, when asked for.
hooks_yaml() {
  [ -n "${PGDR_LAB_ROLE_HOOK:-}" ] || return 0
  printf 'hooks:\n  on_role_change: ["%s"]\n  timeout: 10s\n' "$PGDR_LAB_ROLE_HOOK"
}

write_coordinator() {
  local c=$1 dir=$LAB/$1 joins="" o
  for o in "${COORDS[@]}"; do
    [ "$o" = "$c" ] || joins+="${joins:+, }\"127.0.0.1:$(port cgossip "$o")\""
  done
  mkdir -p "$dir/data"
  cat >"$dir/coordinator.yaml" <<YAML
# pgdr lab coordinator $c (written by scripts/lab.sh)
name: $c
region: $(region "$c")
data_dir: $dir/data
log_level: info
raft:
  bind: "127.0.0.1:$(port raft "$c")"
api:
  listen: "127.0.0.1:$(port api "$c")"
http:
  listen: "127.0.0.1:$(port http "$c")"
ui:
  listen: "127.0.0.1:$(port ui "$c")"
  refresh: 5s
gossip:
  bind: "127.0.0.1:$(port cgossip "$c")"
  join: [$joins]
  key_file: $LAB/gossip.key
  profile: local
tls:
  ca_file: $LAB/tls/ca.crt
  cert_file: $LAB/tls/$c.crt
  key_file: $LAB/tls/$c.key
auth:
  tokens_file: $LAB/tokens.yaml
health:
  stale_after: 3s
failover:
  lease_ttl: ${PGDR_LAB_LEASE_TTL:-5s}
  safety_margin: ${PGDR_LAB_SAFETY_MARGIN:-1s}
  min_interval: ${PGDR_LAB_MIN_INTERVAL:-30s}
  pause_before_promote: ${PGDR_LAB_PAUSE_BEFORE_PROMOTE:-0s}
$(notifications_yaml)
$(incidents_yaml)
bootstrap:
$(for o in "${COORDS[@]}"; do
    printf '  - {name: %s, raft_address: "127.0.0.1:%s", api_address: "127.0.0.1:%s", region: %s}\n' \
      "$o" "$(port raft "$o")" "$(port api "$o")" "$(region "$o")"
  done)
YAML
  "$LAB/bin/pgdr-coordinator" config check --config "$dir/coordinator.yaml" >/dev/null
}

# start_coordinator NAME [--bootstrap]: only `up`, the lab's first start,
# passes --bootstrap; a restart must not (a coordinator whose data_dir was
# lost waits to be added instead of forming a second cluster).
start_coordinator() {
  local c=$1 dir=$LAB/$1
  shift
  lab_pid "$dir/coordinator.pid" >/dev/null && { say "$c is already running"; return 0; }
  rm -f "$dir/coordinator.pid"
  setsid "$LAB/bin/pgdr-coordinator" run --config "$dir/coordinator.yaml" --pid-file "$dir/coordinator.pid" "$@" \
    </dev/null >>"$dir/coordinator.log" 2>&1 &
}

# receive_yaml prints the wal.receive flow mapping (after a comma) for a
# node listed in PGDR_LAB_WAL_RECEIVE.
receive_yaml() {
  case " ${PGDR_LAB_WAL_RECEIVE:-} " in
    *" $1 "*) printf ', receive: {enabled: true, upload_interval: 500ms}' ;;
  esac
}

write_agent() {
  local n=$1 dir=$LAB/$1 joins="" c
  for c in "${COORDS[@]}"; do joins+="${joins:+, }\"127.0.0.1:$(port cgossip "$c")\""; done
  cat >"$dir/agent.yaml" <<YAML
# pgdr lab agent $n (written by scripts/lab.sh)
cluster: $CLUSTER
node: {name: $n, region: $(region "$n")}
postgres:
  pgdata: $dir/pgdata
  bindir: $PGBIN
  dsn: "host=127.0.0.1 port=$(port pg "$n") user=postgres dbname=postgres"
repos:
  - name: local
    url: file://$LAB/repo
compression: {method: zstd, level: 3}
encryption:
  recipients: ["$RECIPIENT"]
  identity_file: $LAB/identity.txt
signing:
  key_file: $LAB/signing.key
  public_keys: ["$SIGNPUB"]
wal: {push_concurrency: 4, prefetch: 8$(receive_yaml "$n")}
agent: {socket: $dir/agent.sock, log_level: info}
health:
  interval: 1s
  listen: "127.0.0.1:$(port health "$n")"
coordinator:
  addresses: [$(for c in "${COORDS[@]}"; do printf '"127.0.0.1:%s"' "$(port api "$c")"; [ "$c" = c3 ] || printf ', '; done)]
  ca_file: $LAB/tls/ca.crt
  cert_file: $LAB/tls/$n.crt
  key_file: $LAB/tls/$n.key
gossip:
  bind: "127.0.0.1:$(port gossip "$n")"
  join: [$joins]
  key_file: $LAB/gossip.key
failover:
  lease_gated_commits: ${PGDR_LAB_LEASE_GATED:-off}
$(hooks_yaml)
YAML
}

start_agent() {
  local n=$1 dir=$LAB/$1 i
  lab_pid "$dir/agent.pid" >/dev/null && return 0
  rm -f "$dir/agent.pid"
  as_pg_exec setsid "$LAB/bin/pgdr-agent" run --config "$dir/agent.yaml" --pid-file "$dir/agent.pid" \
    </dev/null >>"$dir/agent.log" 2>&1 &
  for i in $(seq 100); do
    lab_pid "$dir/agent.pid" >/dev/null && return 0
    sleep 0.1
  done
  tail -n 20 "$dir/agent.log" >&2 || true
  die "agent $n did not start (log: $dir/agent.log)"
}

# postgres settings common to every node; the node's own lines come last.
pg_conf() {
  local n=$1 dir=$LAB/$1
  cat <<CONF

# ---- pgdr lab ($n) ----
listen_addresses = '127.0.0.1'
port = $(port pg "$n")
unix_socket_directories = '$dir'
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '512MB'
hot_standby = on
hot_standby_feedback = on
archive_mode = on
archive_command = '$LAB/bin/pgdr-agent wal-push --config $dir/agent.yaml %p'
restore_command = '$LAB/bin/pgdr-agent wal-fetch --config $dir/agent.yaml %f %p'
cluster_name = '$n'
logging_collector = off
log_line_prefix = '%m [%p] '
CONF
}

start_pg() {
  local n=$1 dir=$LAB/$1
  as_pg "$PGBIN/pg_ctl" -D "$dir/pgdata" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
    { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL $n did not start (log: $dir/postgres.log)"; }
}

# healthy_json: succeeds when status JSON on stdin shows the whole lab up.
healthy_check='
  (.coordinators | length) == 3 and ([.coordinators[] | select(.leader)] | length) == 1 and
  ([.clusters[] | select(.name == $cl)] | length) == 1 and
  (.clusters[] | select(.name == $cl) |
    .primary == $pri and .epoch >= 1 and (.members | length) == 3 and
    all(.members[]; .healthy and .timeline >= 1 and
        (if .name == $pri then .role == "primary" else .role == "replica" end)))'

wait_healthy() {
  local deadline=$((SECONDS + TIMEOUT)) out="" why=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    # Healthy members, and the primary holds its lease (/primary answers
    # 200 only then), so routing through /primary works once up returns.
    if out=$(ctl status --json --timeout 3s 2>&1) &&
      jq -e --arg cl "$CLUSTER" --arg pri "$PRIMARY" "$healthy_check" <<<"$out" >/dev/null 2>&1 &&
      curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$(port health "$PRIMARY")/primary" 2>/dev/null; then
      return 0
    fi
    why=$out
    sleep 0.5
  done
  echo "lab: the lab did not become healthy within ${TIMEOUT}s. Last pgdrctl status --json:" >&2
  echo "$why" >&2
  tail_logs
  echo >&2
  die "not healthy after ${TIMEOUT}s; processes left running for inspection — stop them with: $0 down"
}

write_env() {
  ctl_env
  cat >"$LAB/env" <<ENV
# pgdr lab: source this file (or eval "\$(scripts/lab.sh env)") to use pgdrctl
export PGDR_LAB_DIR=$LAB
export PGDR_ADDR=$PGDR_ADDR
export PGDR_CA=$PGDR_CA
export PGDR_CERT=$PGDR_CERT
export PGDR_KEY=$PGDR_KEY
export PGDR_LAB_UI=https://127.0.0.1:$(port ui c1)/ui/
export PATH=$LAB/bin:\$PATH
ENV
}

cmd_up() {
  local running p c n
  running=$(count_running)
  if [ "$running" -gt 0 ]; then
    if [ "$running" = 9 ]; then
      say "already running in $LAB (9 of 9 processes); not starting twice"
      ctl_env
      ctl status || true
      return 0
    fi
    die "a lab in $LAB is partly running ($running of 9 processes); run '$0 down' first"
  fi
  if [ -e "$LAB" ] && [ -n "$(ls -A "$LAB" 2>/dev/null)" ] && [ ! -f "$LAB/$MARKER" ]; then
    die "$LAB exists, is not empty and is not a lab directory; choose another PGDR_LAB_DIR"
  fi
  [ -z "$(strays)" ] || die "processes of an old lab in $LAB are still running: $(strays | tr '\n' ' '); run '$0 down'"
  need_tools
  for p in $(all_ports); do
    port_busy "$p" && die "port 127.0.0.1:$p is in use; choose another PGDR_LAB_PORT_BASE (the lab uses $((BASE + 1))..$((BASE + 69)))"
  done
  # A fresh lab every time: the old one's files are removed.
  if [ -f "$LAB/$MARKER" ]; then rm -rf "${LAB:?}"/* "$LAB/$MARKER"; fi
  mkdir -p "$LAB"
  touch "$LAB/$MARKER"
  chmod 0755 "$LAB"
  if is_root; then
    runuser -u postgres -- test -x "$LAB" ||
      die "$LAB is not traversable by the postgres user (PostgreSQL and the agents run as postgres); check the modes of its parent directories"
  fi
  say "lab directory $LAB, ports $((BASE + 1))..$((BASE + 69)) on 127.0.0.1"
  bins

  say "certificates, gossip key, tokens, age identity, signing key, file repository"
  "$LAB/bin/pgdrctl" tls init --dir "$LAB/tls" --coordinators "$(IFS=,; echo "${COORDS[*]}")" \
    --agents "$(IFS=,; echo "${NODES[*]}")" --cluster "$CLUSTER" >/dev/null
  (umask 077 && head -c32 /dev/urandom | base64 >"$LAB/gossip.key")
  local admin_secret read_secret
  admin_secret=$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  read_secret=$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077 && printf '%s\n' "$admin_secret" >"$LAB/admin.token" && printf '%s\n' "$read_secret" >"$LAB/read.token")
  (umask 077 && cat >"$LAB/tokens.yaml" <<TOK
# bearer tokens: sha256 of the secrets in admin.token and read.token
# (the agents use their certificates; an agent token would need
#  "role: agent, cluster: <cluster>, node: <node>": it acts for that member only)
- {name: lab-admin, role: admin, sha256: $(printf '%s' "$admin_secret" | sha256sum | cut -d' ' -f1)}
- {name: lab-read, role: read, sha256: $(printf '%s' "$read_secret" | sha256sum | cut -d' ' -f1)}
TOK
  )
  RECIPIENT=$("$LAB/bin/pgdr-agent" keygen -o "$LAB/identity.txt")
  SIGNPUB=$("$LAB/bin/pgdr-agent" keygen --signing -o "$LAB/signing.key")
  mkdir -p "$LAB/repo"
  for n in "${NODES[@]}"; do mkdir -p "$LAB/$n"; write_agent "$n"; done
  # PostgreSQL and the agents run as postgres: they own their files.
  if is_root; then chown -R postgres: "$LAB"; fi

  say "coordinators ${COORDS[*]}"
  for c in "${COORDS[@]}"; do write_coordinator "$c"; done
  for c in "${COORDS[@]}"; do start_coordinator "$c" --bootstrap; done

  say "PostgreSQL 15 primary $PRIMARY on 127.0.0.1:$(port pg $PRIMARY)"
  local pdir=$LAB/$PRIMARY
  as_pg "$PGBIN/initdb" -D "$pdir/pgdata" -U postgres -A trust --data-checksums --no-sync -E UTF8 --locale=C >"$pdir/initdb.log" 2>&1 ||
    { cat "$pdir/initdb.log" >&2; die "initdb failed"; }
  pg_conf "$PRIMARY" | as_pg tee -a "$pdir/pgdata/postgresql.conf" >/dev/null
  as_pg "$LAB/bin/pgdr-agent" config check --config "$pdir/agent.yaml" >/dev/null
  start_pg "$PRIMARY"
  start_agent "$PRIMARY"

  for n in "${NODES[@]}"; do
    [ "$n" = "$PRIMARY" ] && continue
    say "streaming replica $n ($(region "$n")) on 127.0.0.1:$(port pg "$n"): pg_basebackup -R"
    as_pg "$PGBIN/pg_basebackup" -D "$LAB/$n/pgdata" -R -X stream -c fast --no-sync \
      -d "host=127.0.0.1 port=$(port pg $PRIMARY) user=postgres application_name=$n" >"$LAB/$n/basebackup.log" 2>&1 ||
      { cat "$LAB/$n/basebackup.log" >&2; die "pg_basebackup for $n failed"; }
    pg_conf "$n" | as_pg tee -a "$LAB/$n/pgdata/postgresql.conf" >/dev/null
    as_pg "$LAB/bin/pgdr-agent" config check --config "$LAB/$n/agent.yaml" >/dev/null
    start_pg "$n"
    start_agent "$n"
  done

  write_env
  say "waiting (up to ${TIMEOUT}s) until pgdrctl status shows 3 coordinators with a leader and 3 healthy members"
  wait_healthy
  ctl status
  echo
  say "up. Use it with:  source $LAB/env   (then: pgdrctl status, pgdrctl members, pgdrctl history)"
  say "stop it with:     $0 down"
}

# ---- down ------------------------------------------------------------------
# stop_pids SIGNAL BOUND FILE...: signal the lab processes named in the pid
# files, wait up to BOUND seconds for all of them, then SIGKILL survivors.
stop_pids() {
  local sig=$1 bound=$2 f pid pids=() alive i
  shift 2
  for f in "$@"; do
    if pid=$(lab_pid "$f"); then
      pids+=("$pid")
      kill "-$sig" "$pid" 2>/dev/null || true
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq $((bound * 10))); do
    alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  say "still alive after ${bound}s: ${alive[*]}; SIGKILL"
  kill -KILL "${alive[@]}" 2>/dev/null || true
  for i in $(seq 50); do
    kill -0 "${alive[@]}" 2>/dev/null || return 0
    sleep 0.1
  done
}

# stop_pg PGDATA...: fast shutdown of every running server (in parallel),
# immediate if fast does not finish, SIGKILL as the last resort.
stop_pg() {
  local d
  for d in "$@"; do
    lab_pid "$d/postmaster.pid" >/dev/null || continue
    (as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w -t 10 stop >/dev/null 2>&1 || true) &
  done
  wait
  for d in "$@"; do stop_pids KILL 5 "$d/postmaster.pid"; done
}

cmd_down() {
  local n c d f left i
  if [ "$(count_running)" = 0 ] && [ -z "$(strays)" ]; then
    say "no lab running in $LAB; nothing to stop"
    return 0
  fi
  say "stopping the lab in $LAB"
  local agents=() coords=() pgdirs=()
  for n in "${NODES[@]}"; do agents+=("$LAB/$n/agent.pid"); done
  for c in "${COORDS[@]}"; do coords+=("$LAB/$c/coordinator.pid"); done
  for d in "$LAB"/*/pgdata "$LAB"/*/*/pgdata; do [ -f "$d/postmaster.pid" ] && pgdirs+=("$d"); done
  stop_pids TERM 10 "${agents[@]}"
  [ ${#pgdirs[@]} -eq 0 ] || stop_pg "${pgdirs[@]}"
  stop_pids TERM 15 "${coords[@]}"
  # Anything left (a daemon whose pid file was lost, an archive_command):
  left=$(strays)
  if [ -n "$left" ]; then
    say "stray lab processes: $(echo "$left" | tr '\n' ' '); SIGTERM"
    kill -TERM $left 2>/dev/null || true
    for i in $(seq 50); do [ -z "$(strays)" ] && break; sleep 0.1; done
    left=$(strays)
    [ -z "$left" ] || { kill -KILL $left 2>/dev/null || true; sleep 0.5; }
  fi
  left=$(strays)
  for f in $(pid_files); do lab_pid "$f" >/dev/null && left+=" $(lab_pid "$f")"; done
  if [ -n "${left// /}" ]; then
    ps -o pid,user,args -p "$(echo $left | tr ' ' ,)" >&2 || true
    die "lab processes are still running: $left"
  fi
  say "stopped; no lab process left (files stay in $LAB)"
}

# ---- main ------------------------------------------------------------------
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status)
    [ -f "$LAB/env" ] || die "no lab in $LAB (run: $0 up)"
    ctl_env
    ctl status "$@"
    ;;
  env)
    [ -f "$LAB/env" ] || die "no lab in $LAB (run: $0 up)"
    cat "$LAB/env"
    ;;
  ports)
    printf '%-10s %-28s\n' NAME "PORTS (127.0.0.1)"
    for c in "${COORDS[@]}"; do
      printf '%-10s raft %s  api %s  http %s  gossip %s  status page https://127.0.0.1:%s/ui/\n' "$c" "$(port raft "$c")" "$(port api "$c")" "$(port http "$c")" "$(port cgossip "$c")" "$(port ui "$c")"
    done
    for n in "${NODES[@]}"; do
      printf '%-10s postgres %s  agent http %s  gossip %s\n' "$n" "$(port pg "$n")" "$(port health "$n")" "$(port gossip "$n")"
    done
    printf '%-10s postgres %s (demo PITR)\n' restored "$(port restore x)"
    ;;
  port) port "$@" ;;
  start-coordinator)
    [ $# = 1 ] || die "usage: $0 start-coordinator NAME"
    coord_idx "$1" >/dev/null
    [ -f "$LAB/$1/coordinator.yaml" ] || die "no coordinator $1 in $LAB"
    start_coordinator "$1"
    ;;
  start-agent)
    [ $# = 1 ] || die "usage: $0 start-agent NAME"
    node_idx "$1" >/dev/null
    [ -f "$LAB/$1/agent.yaml" ] || die "no node $1 in $LAB"
    start_agent "$1"
    ;;
  install-bins)
    [ $# = 1 ] || die "usage: $0 install-bins DIR"
    [ -f "$LAB/$MARKER" ] || die "no lab in $LAB (run: $0 up)"
    install_bins "$1"
    say "installed $1's binaries in $LAB/bin; running processes keep theirs until restarted"
    ;;
  restart-coordinator)
    [ $# = 1 ] || die "usage: $0 restart-coordinator NAME"
    coord_idx "$1" >/dev/null
    [ -f "$LAB/$1/coordinator.yaml" ] || die "no coordinator $1 in $LAB"
    stop_pids TERM 30 "$LAB/$1/coordinator.pid"
    start_coordinator "$1"
    ;;
  restart-agent)
    [ $# = 1 ] || die "usage: $0 restart-agent NAME"
    node_idx "$1" >/dev/null
    [ -f "$LAB/$1/agent.yaml" ] || die "no node $1 in $LAB"
    stop_pids TERM 30 "$LAB/$1/agent.pid"
    start_agent "$1"
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
