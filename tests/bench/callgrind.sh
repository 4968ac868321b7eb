#!/usr/bin/env bash
# Instructions per request (valgrind --tool=callgrind), the repeatable figure
# the Lua request path is tuned by: wall-clock req/s moves with whatever
# else runs on the machine, instruction counts do not.
#
# One engine worker (WORKERS=1) runs under callgrind on its own redis-server;
# twice: a client sends a warm-up, then BENCH_CG_SMALL (200) keep-alive
# requests in one run and BENCH_CG_SMALL + BENCH_CG_REQUESTS in the other,
# one after another; the difference of the worker's totals over
# BENCH_CG_REQUESTS is one request (start-up and exit cancel out), printed
# in total and per function (inclusive). (callgrind_control cannot reach a
# forked worker, hence two runs.)
#
#   tests/bench/callgrind.sh               # lua route, redis-hit product, l1 product
#   BENCH_CG_ONLY=lua tests/bench/callgrind.sh
#   BENCH_CG_KEEP=1 ...                    # keep the callgrind.out files (callgrind_annotate)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${BENCH_CG_REQUESTS:-2000}
ONLY=${BENCH_CG_ONLY:-lua,redis,l1}
IDS=${BENCH_CG_IDS:-100}
check_ints REQUESTS IDS
[ -x "$BIN" ] || die "no engine binary at $BIN (run 'make build')"
for tool in valgrind callgrind_control callgrind_annotate redis-server python3; do
  command -v "$tool" >/dev/null || die "'$tool' not found (engine/scripts/deps.sh bench)"
done

bench_tmp callgrind
cp -R "$SRC/lua" "$TMP/lua"
cp -R "$SRC/policies" "$TMP/policies"
cp "$HERE/handlers/bench.lua" "$TMP/lua/handlers/bench.lua"
cp -R "$SRC/policies" "$TMP/policies-l1"
python3 - "$TMP/policies-l1/cache.lua" <<'EOF' || die "cannot edit the copy of policies/cache.lua"
import sys
path = sys.argv[1]
src = open(path, encoding="utf-8").read()
end = src.rstrip().rfind("}")
head = src[:end].rstrip()
sep = "" if head.endswith((",", ";", "{")) else ","
open(path, "w", encoding="utf-8").write(
    head + sep + '\n  namespaces = { product = { consistency = "bounded", max_lag_ms = 1000 } },\n' + src[end:])
EOF
read -r redis_port port < <(free_ports 2)
start_redis "$redis_port"

ids=()
for ((i = 1; i <= IDS; i++)); do ids+=("$(printf '/api/products/p-%04d' "$i")"); done

# run_once NAME POLICY_DIR N PATH...: the worker's total instruction count
# (program start to exit) when it serves N requests after the warm-up.
run_once() {
  local name=$1 pol=$2 n=$3; shift 3
  local out=$TMP/cg-$name-$n
  (
    cd "$SRC"
    exec env -u REDIS_URL PORT="$port" HOST=127.0.0.1 WORKERS=1 \
      REDIS_HOST=127.0.0.1 REDIS_PORT="$REDIS_PORT" REDIS_KEY_PREFIX="cg$name$n:" \
      DB_PATH="$TMP/var/$name-$n.db" LUA_DIR="$TMP/lua" POLICY_DIR="$pol" \
      MIGRATIONS_DIR="$SRC/engine/migrations" PID_FILE="$TMP/var/$name-$n.pid" \
      LOG_LEVEL=warn RATELIMIT_ENABLED=false ACCESS_LOG=false SHUTDOWN_GRACE=2 \
      valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
      "$BIN" serve
  ) >"$TMP/$name-$n.log" 2>&1 &
  local epid=$!
  ENGINE_PIDS+=("$epid")
  # shellcheck disable=SC2329 # used through wait_for
  health_ok() { [ "$(fetch "$port" /health --timeout 5 2>/dev/null)" = 200 ]; }
  wait_for 120 "$name /health" "$epid" health_ok || { show_log "$name" "$TMP/$name-$n.log"; die "$name did not start"; }
  local worker
  worker=$(pgrep -P "$epid" | head -n 1)
  [ -n "$worker" ] || die "$name: no worker process"
  python3 "$HERE/cgclient.py" "$port" 300 "$@" || die "$name: warm-up failed"
  python3 "$HERE/cgclient.py" "$port" "$n" "$@" || die "$name: measured requests failed"
  stop "$epid" TERM 60
  CG_FILE=$out.$worker
  [ -s "$CG_FILE" ] || die "$name: no callgrind output $CG_FILE"
  CG_TOTAL=$(sed -n 's/^summary: *//p' "$CG_FILE" | head -n 1)
  [ -n "$CG_TOTAL" ] || die "$name: no summary in $CG_FILE"
}

# measure NAME POLICY_DIR PATH...: two runs (SMALL and SMALL + REQUESTS
# requests); the difference over REQUESTS is the cost of one request, with
# start-up and shutdown cancelled out. Prints it, and per function.
measure() {
  local name=$1 pol=$2; shift 2
  local small=${BENCH_CG_SMALL:-200} a b fa fb
  run_once "$name" "$pol" "$small" "$@"; a=$CG_TOTAL; fa=$CG_FILE
  run_once "$name" "$pol" $((small + REQUESTS)) "$@"; b=$CG_TOTAL; fb=$CG_FILE
  printf '%-6s %8d instructions/request  (%s - %s over %s requests)\n' "$name" $(((b - a) / REQUESTS)) "$b" "$a" "$REQUESTS"
  if [ "${BENCH_CG_DETAIL:-1}" = 1 ]; then
    # per function: (count in the long run - in the short run) / REQUESTS
    echo "   per request, self:"
    python3 "$HERE/cgdiff.py" no "$fa" "$fb" "$REQUESTS" "${BENCH_CG_TOP:-40}"
    echo "   per request, inclusive:"
    python3 "$HERE/cgdiff.py" yes "$fa" "$fb" "$REQUESTS" "${BENCH_CG_TOP:-40}"
  fi
  if [ "${BENCH_CG_KEEP:-0}" = 1 ]; then
    mkdir -p "$OUT_DIR"; cp "$fb" "$OUT_DIR/callgrind-$name.out"; log "kept $OUT_DIR/callgrind-$name.out"
  fi
}

IFS=, read -r -a which <<< "$ONLY"
for w in "${which[@]}"; do
  case "$w" in
    lua) measure lua "$TMP/policies" /bench/fixed ;;
    redis) measure redis "$TMP/policies" "${ids[@]}" ;;
    l1) measure l1 "$TMP/policies-l1" "${ids[@]}" ;;
    *) die "BENCH_CG_ONLY: unknown '$w' (lua,redis,l1)" ;;
  esac
done
