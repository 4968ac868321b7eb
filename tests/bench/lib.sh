# shellcheck shell=bash
# Shared helpers of the benchmarks (tests/bench/{core,products,zipf}.sh):
# settings, bounded waits, starting redis-server / engines / nginx on free
# loopback ports inside one temp dir, one wrk run, CPU accounting, perf, and
# the cleanup trap that stops everything a script started.
#
# Source it first thing: it sets `set -euo pipefail` and the EXIT/INT/TERM
# traps. A script then calls bench_tmp NAME before starting anything.

# shellcheck disable=SC2317  # cleanup/stop/probes run from traps and wait_for
# shellcheck disable=SC2034  # settings are used by the scripts that source this
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$SRC/tests/bench
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$SRC/$BUILD_DIR ;; esac
BIN=${JJ_BIN:-$BUILD_DIR/jollyjet}
NGINX=${NGINX:-/usr/sbin/nginx}
OUT_DIR=$BUILD_DIR/bench

WORKERS=${BENCH_WORKERS:-2}
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
WARMUP=${BENCH_WARMUP:-2}
PROFILE=${BENCH_PROFILE:-0}
CPUS=$(nproc 2>/dev/null || echo "?")

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

# check_ints VAR...: each BENCH_<VAR> (held in VAR) must be a positive integer.
check_ints() {
  local v
  for v in "$@"; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
  done
}
# check_number NAME VALUE
check_number() {
  [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$1 must be a number (got '$2')"
}

check_common() {
  check_ints WORKERS DURATION ROUNDS CONNECTIONS THREADS WARMUP
  (( THREADS <= CONNECTIONS )) || die "BENCH_THREADS ($THREADS) must not exceed BENCH_CONNECTIONS ($CONNECTIONS)"
  [ -x "$BIN" ] || die "no engine binary at $BIN (run 'make build')"
  local tool
  for tool in wrk redis-server python3 cmp timeout "$@"; do
    command -v "$tool" >/dev/null || die "'$tool' not found (engine/scripts/deps.sh bench installs what the bench needs)"
  done
}
check_nginx() {
  [ -x "$NGINX" ] || die "no nginx at $NGINX (engine/scripts/deps.sh bench installs nginx-light)"
}

# --- processes and cleanup ------------------------------------------------
REDIS_PID="" NGINX_PID="" WRK_PID="" PERF_PID="" LAST_PID=""
ENGINE_PIDS=()
EXTRA_NGINX_PIDS=()   # more nginx masters (sweep.sh)
TMP=""

# stop PID SIGNAL SECONDS: signal, wait a bounded time, then SIGKILL; reap.
stop() {
  local pid=$1 sig=$2 secs=$3 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop on SIG$sig within ${secs}s: SIGKILL"
    kill -s KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  stop "$PERF_PID" INT 5
  stop "$WRK_PID" TERM 3
  stop "$NGINX_PID" TERM 5       # nginx master stops its workers
  for pid in "${EXTRA_NGINX_PIDS[@]}"; do stop "$pid" TERM 5; done
  for pid in "${ENGINE_PIDS[@]}"; do
    stop "$pid" TERM 10          # master drains its workers (they also have PDEATHSIG)
  done
  stop "$REDIS_PID" TERM 5
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    # Kept on request, or after a failure (logs, wrk outputs) unless BENCH_KEEP_TMP=0.
    if [ "${BENCH_KEEP_TMP:-}" = 1 ] || { [ "$rc" -eq 1 ] && [ "${BENCH_KEEP_TMP:-}" != 0 ]; }; then
      log "kept temp dir $TMP"
    else
      rm -rf "$TMP"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# now_ms: monotonic enough for bounded waits.
now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }

# wait_for SECONDS WHAT PID CMD...: poll CMD until it succeeds; fail if the
# deadline passes or PID (the server being waited for) exits.
wait_for() {
  local secs=$1 what=$2 pid=$3; shift 3
  local deadline=$(( $(now_ms) + secs * 1000 ))
  while (( $(now_ms) < deadline )); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { log "$what: process $pid exited"; return 1; }
    sleep 0.05
  done
  log "$what: not ready after ${secs}s"
  return 1
}

show_log() {  # show_log NAME FILE
  [ -s "$2" ] || return 0
  log "--- last lines of $1 ($2) ---"
  tail -n 30 "$2" >&2 || true
}

# bench_tmp NAME: the temp dir every process of this script works in.
bench_tmp() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/jj-bench-$1.XXXXXX")
  # nginx started as root runs its workers as 'nobody': they must read www/.
  chmod 755 "$TMP"
  mkdir -p "$TMP/var" "$TMP/www" "$TMP/nginx" "$TMP/redis" "$TMP/wrk"
}

# free_ports N: N distinct free loopback ports (held open together while chosen).
free_ports() {
  python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()' "$1"
}

fetch() { python3 "$HERE/report.py" fetch "$@"; }   # fetch PORT PATH [--body F] [--headers F]

# --- redis ------------------------------------------------------------------
# start_redis PORT: sets REDIS_PORT, REDIS_PID.
start_redis() {
  REDIS_PORT=$1
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" >/dev/null 2>&1 &
  REDIS_PID=$!
  wait_for 5 "redis on 127.0.0.1:$REDIS_PORT" "$REDIS_PID" redis_ping \
    || { show_log redis "$TMP/redis/redis.log"; die "redis-server did not start"; }
}
redis_ping() {
  exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
  printf 'PING\r\n' >&3
  local line=""
  read -r -t 1 line <&3 || true
  exec 3>&- 3<&-
  [[ $line == +PONG* ]]
}

# --- engine -----------------------------------------------------------------
# start_engine NAME PORT LUA_DIR POLICY_DIR DB_PATH [VAR=VALUE...]: a master
# with WORKERS workers on the started redis (its own key prefix), log in
# $TMP/NAME.log; waits for /health 200. Sets LAST_PID.
start_engine() {
  local name=$1 port=$2 lua=$3 pol=$4 dbp=$5; shift 5
  (
    cd "$SRC"
    exec env -u REDIS_URL \
      PORT="$port" HOST=127.0.0.1 WORKERS="$WORKERS" \
      REDIS_HOST=127.0.0.1 REDIS_PORT="$REDIS_PORT" REDIS_KEY_PREFIX="bench$port:" \
      DB_PATH="$dbp" LUA_DIR="$lua" POLICY_DIR="$pol" \
      MIGRATIONS_DIR="$SRC/engine/migrations" PID_FILE="$TMP/var/$name.pid" \
      LOG_LEVEL=warn RATELIMIT_ENABLED=false ACCESS_LOG=false SHUTDOWN_GRACE=2 \
      "$@" "$BIN" serve
  ) >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  ENGINE_PIDS+=("$LAST_PID")
  # shellcheck disable=SC2329 # used through wait_for
  health_ok() { [ "$(fetch "$port" /health --timeout 1 2>/dev/null)" = 200 ]; }
  wait_for 20 "$name /health on 127.0.0.1:$port" "$LAST_PID" health_ok \
    || { show_log "$name" "$TMP/$name.log"; die "$name did not start (or /health is not 200)"; }
}

# engine_errors NAME: report error lines of an engine log (not a failure).
engine_errors() {
  local f=$TMP/$1.log errors
  errors=$(grep -c '"level":"error"' "$f" || true)
  [ "${errors:-0}" -eq 0 ] || { log "$1 logged $errors error line(s):"; grep -m 5 '"level":"error"' "$f" >&2 || true; }
}

# --- nginx ------------------------------------------------------------------
# start_nginx TEMPLATE PORT PROBE_PATH: sets NGINX_PORT, NGINX_PID.
start_nginx() {
  local tpl=$1 probe=$3
  NGINX_PORT=$2
  sed -e "s|@TMP@|$TMP|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$NGINX_PORT|g" \
    "$tpl" > "$TMP/nginx.conf"
  "$NGINX" -p "$TMP/" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" -g 'daemon off;' \
    >"$TMP/nginx/stdout.log" 2>&1 &
  NGINX_PID=$!
  # shellcheck disable=SC2329 # used through wait_for
  nginx_ok() { [ "$(fetch "$NGINX_PORT" "$probe" --timeout 1 2>/dev/null)" = 200 ]; }
  wait_for 10 "nginx on 127.0.0.1:$NGINX_PORT" "$NGINX_PID" nginx_ok \
    || { show_log nginx "$TMP/nginx/stdout.log"; show_log nginx "$TMP/nginx/error.log"; die "nginx did not start"; }
}

# alive: every server this script started is still running.
alive() {
  local pid
  [ -z "$REDIS_PID" ] || kill -0 "$REDIS_PID" 2>/dev/null \
    || { show_log redis "$TMP/redis/redis.log"; die "redis-server exited during the run"; }
  [ -z "$NGINX_PID" ] || kill -0 "$NGINX_PID" 2>/dev/null \
    || { show_log nginx "$TMP/nginx/error.log"; die "nginx exited during the run"; }
  for pid in "${ENGINE_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP"/*.log >&2 || true; die "an engine (pid $pid) exited during the run"; }
  done
}

# --- measuring --------------------------------------------------------------
# run_wrk NAME PORT PATH SECONDS OUTFILE [WRK_ARG...]: one wrk --latency run
# against http://127.0.0.1:PORT/PATH; returns non-zero if it is not a clean
# measurement (wrk failed, socket errors, non-2xx responses). Extra arguments
# go to wrk (e.g. -s script.lua -- args).
run_wrk() {
  local name=$1 port=$2 path=$3 secs=$4 out=$5 rc=0; shift 5
  local extra=() script_args=() seen=0 a
  # wrk wants its options before the URL and script arguments after it.
  for a in "$@"; do
    if [ "$a" = -- ]; then seen=1; continue; fi
    if [ "$seen" = 1 ]; then script_args+=("$a"); else extra+=("$a"); fi
  done
  timeout --kill-after=5 $((secs + 30)) \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "${extra[@]}" \
    "http://127.0.0.1:$port$path" ${script_args[@]+-- "${script_args[@]}"} \
    >"$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  printf 'bench: %-12s %-16s' "$name" "$(basename "$out" .txt)" >&2
  if [ "$rc" -ne 0 ]; then
    printf ' wrk exited %s\n' "$rc" >&2
    sed 's/^/    /' "$out" >&2
    return 1
  fi
  if ! python3 "$HERE/report.py" check "$out" >&2; then
    sed 's/^/    /' "$out" >&2
    return 1
  fi
}

# cpu_ticks PID...: "USER SYSTEM" clock ticks used so far by each PID and its
# direct children (engine and nginx workers), summed.
cpu_ticks() {
  local p c u=0 k=0 t
  for p in "$@"; do
    [ -n "$p" ] || continue
    for c in "$p" $(pgrep -P "$p" 2>/dev/null || true); do
      t=$(sed 's/.*) //' "/proc/$c/stat" 2>/dev/null | awk '{print $12, $13}') || t=""
      [ -n "$t" ] || continue
      u=$((u + ${t% *})); k=$((k + ${t#* }))
    done
  done
  echo "$u $k"
}
# cpu_delta "U0 S0" "U1 S1": "USER SYSTEM" ticks between two cpu_ticks.
cpu_delta() {
  local a b
  read -r -a a <<< "$1"
  read -r -a b <<< "$2"
  echo "$((b[0] - a[0])) $((b[1] - a[1]))"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# profile_workers ENGINE_PID OUT_TXT LABEL SECONDS CMD...: perf record on the
# engine's workers while CMD runs (CMD should load them for SECONDS); the
# hottest code (self time by object and function) goes to OUT_TXT.
profile_workers() {
  local epid=$1 out=$2 label=$3 secs=$4 workers; shift 4
  if ! command -v perf >/dev/null; then
    log "BENCH_PROFILE=1 but perf is not installed; skipping the profile"
    return 0
  fi
  workers=$(pgrep -P "$epid" | paste -sd, -)
  mkdir -p "$(dirname "$out")"
  log "profiling $label workers $workers for ${secs}s (perf record ${BENCH_PERF_ARGS:--F 999 -g})"
  # shellcheck disable=SC2086 # BENCH_PERF_ARGS is a list of perf options
  perf record -q ${BENCH_PERF_ARGS:--F 999 -g} -p "$workers" -o "$TMP/perf.data" -- sleep "$secs" \
    >"$TMP/perf.log" 2>&1 &
  PERF_PID=$!
  "$@" || true
  wait "$PERF_PID" || true
  PERF_PID=""
  {
    echo "# perf: $label workers under wrk -t$THREADS -c$CONNECTIONS, ${secs}s; self time"
    echo "# by shared object:"
    perf report -i "$TMP/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -E '^ +[0-9]' || true
    echo "# by function:"
    perf report -i "$TMP/perf.data" --stdio --no-children -g none --sort dso,symbol 2>/dev/null \
      | grep -E '^ +[0-9]' | sed 's/ *- *- *$//' || true
  } > "$out.full"
  head -n 60 "$out.full" > "$out"; rm -f "$out.full" "$TMP/perf.data"
  if grep -q '%' "$out"; then
    log "hottest code in the $label workers (self time; more in $out):"
    head -n 28 "$out" >&2
  else
    log "perf produced no report:"; cat "$TMP/perf.log" >&2 || true
  fi
}

engine_commit() { git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown; }
nginx_version() { "$NGINX" -v 2>&1 | sed 's|.*/||'; }
