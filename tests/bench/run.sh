#!/usr/bin/env bash
# Core benchmark: a Lua route of the engine against nginx serving the same
# 400-byte JSON body, both with the same worker count, measured alternately
# with wrk in one run on one machine. See tests/bench/README.md.
#
# Reports; does not fail on a missed target. Exits non-zero only when
# something could not be measured (a server did not start, the bodies differ,
# wrk failed or saw socket errors / non-2xx responses).

# shellcheck disable=SC2317  # cleanup/stop/probes run from traps and wait_for
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$SRC/tests/bench
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$SRC/$BUILD_DIR ;; esac
BIN=${JJ_BIN:-$BUILD_DIR/jollyjet}
NGINX=${NGINX:-/usr/sbin/nginx}

WORKERS=${BENCH_WORKERS:-2}
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
WARMUP=${BENCH_WARMUP:-2}
TARGET=${BENCH_TARGET:-0.9}
OUT=${BENCH_OUT:-$BUILD_DIR/bench/core.json}
PROFILE=${BENCH_PROFILE:-0}
BODY_BYTES=400
PATH_=/bench/fixed

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

for v in WORKERS DURATION ROUNDS CONNECTIONS THREADS WARMUP; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[[ $TARGET =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_TARGET must be a number (got '$TARGET')"
(( THREADS <= CONNECTIONS )) || die "BENCH_THREADS ($THREADS) must not exceed BENCH_CONNECTIONS ($CONNECTIONS)"

[ -x "$BIN" ] || die "no engine binary at $BIN (run 'make build')"
[ -x "$NGINX" ] || die "no nginx at $NGINX (engine/scripts/deps.sh bench installs nginx-light)"
for tool in wrk redis-server python3 lua5.4 cmp timeout; do
  command -v "$tool" >/dev/null || die "'$tool' not found (engine/scripts/deps.sh bench installs what the bench needs)"
done

# --- processes and cleanup ------------------------------------------------
REDIS_PID="" ENGINE_PID="" NGINX_PID="" WRK_PID="" PERF_PID=""
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
  local rc=$?
  trap - EXIT INT TERM
  stop "$PERF_PID" INT 5
  stop "$WRK_PID" TERM 3
  stop "$NGINX_PID" TERM 5       # nginx master stops its workers
  stop "$ENGINE_PID" TERM 10     # master drains its workers (they also have PDEATHSIG)
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

# --- temp dir: Lua tree with the bench handler, the body file -------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jj-bench.XXXXXX")
# nginx started as root runs its workers as 'nobody': they must read www/.
chmod 755 "$TMP"
mkdir -p "$TMP/var" "$TMP/www" "$TMP/nginx" "$TMP/redis" "$TMP/wrk"
cp -R "$SRC/lua" "$TMP/lua"
cp -R "$SRC/policies" "$TMP/policies"
mkdir -p "$TMP/lua/handlers"
cp "$HERE/handlers/bench.lua" "$TMP/lua/handlers/bench.lua"
# The nginx file gets the very bytes the handler builds (one source of truth).
HANDLER="$HERE/handlers/bench.lua" lua5.4 -e 'io.write(dofile(os.getenv("HANDLER")).body)' > "$TMP/www/fixed.json"
chmod 755 "$TMP/www"; chmod 644 "$TMP/www/fixed.json"
size=$(wc -c < "$TMP/www/fixed.json")
[ "$size" -eq "$BODY_BYTES" ] || die "body file is $size bytes, expected $BODY_BYTES"

# Three distinct free loopback ports (held open together while chosen).
read -r REDIS_PORT ENGINE_PORT NGINX_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

CPUS=$(nproc 2>/dev/null || echo "?")
log "temp dir $TMP; $WORKERS workers each; wrk -t$THREADS -c$CONNECTIONS; ${ROUNDS}x${DURATION}s per side; $CPUS CPUs"

# --- redis ------------------------------------------------------------------
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" >/dev/null 2>&1 &
REDIS_PID=$!
redis_ping() {
  exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
  printf 'PING\r\n' >&3
  local line=""
  read -r -t 1 line <&3 || true
  exec 3>&- 3<&-
  [[ $line == +PONG* ]]
}
wait_for 5 "redis on 127.0.0.1:$REDIS_PORT" "$REDIS_PID" redis_ping \
  || { show_log redis "$TMP/redis/redis.log"; die "redis-server did not start"; }

# --- engine -----------------------------------------------------------------
(
  cd "$SRC"
  exec env -u REDIS_URL \
    PORT="$ENGINE_PORT" HOST=127.0.0.1 WORKERS="$WORKERS" \
    REDIS_HOST=127.0.0.1 REDIS_PORT="$REDIS_PORT" REDIS_KEY_PREFIX="bench$ENGINE_PORT:" \
    DB_PATH="$TMP/var/jj.db" LUA_DIR="$TMP/lua" POLICY_DIR="$TMP/policies" \
    MIGRATIONS_DIR="$SRC/engine/migrations" PID_FILE="$TMP/var/jj.pid" \
    LOG_LEVEL=warn RATELIMIT_ENABLED=false SHUTDOWN_GRACE=2 \
    "$BIN" serve
) >"$TMP/engine.log" 2>&1 &
ENGINE_PID=$!
fetch() { python3 "$HERE/report.py" fetch "$@"; }   # fetch PORT PATH [--body F] [--headers F]
health_ok() { [ "$(fetch "$ENGINE_PORT" /health --timeout 1 2>/dev/null)" = 200 ]; }
wait_for 20 "engine /health on 127.0.0.1:$ENGINE_PORT" "$ENGINE_PID" health_ok \
  || { show_log engine "$TMP/engine.log"; die "the engine did not start (or /health is not 200)"; }

# --- nginx ------------------------------------------------------------------
sed -e "s|@TMP@|$TMP|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$NGINX_PORT|g" \
  "$HERE/nginx.conf.in" > "$TMP/nginx.conf"
"$NGINX" -p "$TMP/" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" -g 'daemon off;' \
  >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
nginx_ok() { [ "$(fetch "$NGINX_PORT" "$PATH_" --timeout 1 2>/dev/null)" = 200 ]; }
wait_for 10 "nginx on 127.0.0.1:$NGINX_PORT" "$NGINX_PID" nginx_ok \
  || { show_log nginx "$TMP/nginx/stdout.log"; show_log nginx "$TMP/nginx/error.log"; die "nginx did not start"; }

# --- the two bodies must be the same bytes --------------------------------
verify() {  # verify NAME PORT
  local name=$1 port=$2 code ctype
  code=$(fetch "$port" "$PATH_" --timeout 5 --headers "$TMP/$name.headers" --body "$TMP/$name.body") \
    || die "$name: GET $PATH_ failed"
  [ "$code" = 200 ] || die "$name: GET $PATH_ answered $code"
  ctype=$(sed -n 's/^[Cc]ontent-[Tt]ype: *//p' "$TMP/$name.headers" | head -n 1)
  [ "$ctype" = application/json ] || die "$name: Content-Type is '$ctype', expected application/json"
  cmp -s "$TMP/$name.body" "$TMP/www/fixed.json" \
    || die "$name: body differs from the expected $BODY_BYTES bytes ($(wc -c < "$TMP/$name.body") bytes received)"
}
verify nginx "$NGINX_PORT"
verify engine "$ENGINE_PORT"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$TMP/www/fixed.json" || die "the body is not valid JSON"
log "both answer the same $BODY_BYTES-byte application/json body"

# --- measure ----------------------------------------------------------------
# run_wrk NAME PORT SECONDS OUTFILE: one wrk run; returns non-zero if it is not
# a clean measurement (wrk failed, socket errors, non-2xx responses).
run_wrk() {
  local name=$1 port=$2 secs=$3 out=$4 rc=0
  timeout --kill-after=5 $((secs + 30)) \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "http://127.0.0.1:$port$PATH_" \
    >"$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  printf 'bench: %-6s %-15s' "$name" "$(basename "$out" .txt)" >&2
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

alive() {  # both servers still running?
  kill -0 "$NGINX_PID" 2>/dev/null || { show_log nginx "$TMP/nginx/error.log"; die "nginx exited during the run"; }
  kill -0 "$ENGINE_PID" 2>/dev/null || { show_log engine "$TMP/engine.log"; die "the engine exited during the run"; }
}

bad=0
run_wrk nginx "$NGINX_PORT" "$WARMUP" "$TMP/wrk/nginx-warmup.txt" || bad=1
run_wrk engine "$ENGINE_PORT" "$WARMUP" "$TMP/wrk/engine-warmup.txt" || bad=1
alive
nginx_files=() engine_files=()
for ((r = 1; r <= ROUNDS; r++)); do
  run_wrk nginx "$NGINX_PORT" "$DURATION" "$TMP/wrk/nginx-round$r.txt" || bad=1
  nginx_files+=("$TMP/wrk/nginx-round$r.txt")
  run_wrk engine "$ENGINE_PORT" "$DURATION" "$TMP/wrk/engine-round$r.txt" || bad=1
  engine_files+=("$TMP/wrk/engine-round$r.txt")
  alive
done

# Optional: profile the engine workers under the same load (BENCH_PROFILE=1).
if [ "$PROFILE" = 1 ]; then
  if command -v perf >/dev/null; then
    workers=$(pgrep -P "$ENGINE_PID" | paste -sd, -)
    prof_txt=$(dirname "$OUT")/core-profile.txt
    mkdir -p "$(dirname "$OUT")"
    log "profiling engine workers $workers for ${DURATION}s (perf record ${BENCH_PERF_ARGS:--F 999 -g})"
    # shellcheck disable=SC2086 # BENCH_PERF_ARGS is a list of perf options
    perf record -q ${BENCH_PERF_ARGS:--F 999 -g} -p "$workers" -o "$TMP/perf.data" -- sleep "$DURATION" \
      >"$TMP/perf.log" 2>&1 &
    PERF_PID=$!
    run_wrk engine "$ENGINE_PORT" "$DURATION" "$TMP/wrk/engine-profiled.txt" || true
    wait "$PERF_PID" || true
    PERF_PID=""
    {
      echo "# perf: engine workers under wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s; self time"
      echo "# by shared object:"
      perf report -i "$TMP/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -E '^ +[0-9]' || true
      echo "# by function:"
      perf report -i "$TMP/perf.data" --stdio --no-children -g none --sort dso,symbol 2>/dev/null \
        | grep -E '^ +[0-9]' | sed 's/ *- *- *$//' || true
    } > "$prof_txt.full"
    head -n 60 "$prof_txt.full" > "$prof_txt"; rm -f "$prof_txt.full"
    if grep -q '%' "$prof_txt"; then
      log "hottest code in the engine workers (self time; more in $prof_txt):"
      head -n 28 "$prof_txt" >&2
    else
      log "perf produced no report:"; cat "$TMP/perf.log" >&2 || true
    fi
  else
    log "BENCH_PROFILE=1 but perf is not installed; skipping the profile"
  fi
fi

errors=$(grep -c '"level":"error"' "$TMP/engine.log" || true)
[ "${errors:-0}" -eq 0 ] || { log "the engine logged $errors error line(s):"; grep -m 5 '"level":"error"' "$TMP/engine.log" >&2 || true; }

rc=0
python3 "$HERE/report.py" report --out "$OUT" --target "$TARGET" \
  --meta workers="$WORKERS" threads="$THREADS" connections="$CONNECTIONS" duration_s="$DURATION" \
         rounds="$ROUNDS" warmup_s="$WARMUP" body_bytes="$BODY_BYTES" cpus="$CPUS" \
         nginx_version="$("$NGINX" -v 2>&1 | sed 's|.*/||')" \
         engine_commit="$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --nginx "${nginx_files[@]}" --engine "${engine_files[@]}" || rc=$?
if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
  die "some runs could not be measured cleanly (see above); the figures are not valid"
fi
exit 0
