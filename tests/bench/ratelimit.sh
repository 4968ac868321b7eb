#!/usr/bin/env bash
# Rate-limit benchmark: GET /api/products/{id} through a rate-limit rule
# against the same route without one, measured alternately in one run with
# wrk on one machine. Two engines on one redis-server and one database:
#   engine-plain    policies/ratelimits.lua with no rules
#   engine-limited  one rule on the route, keyed by client address, with a
#                   limit so high nothing is refused (every request still
#                   runs the GCRA script in Redis: one EVALSHA round trip)
# Both have RATELIMIT_ENABLED=true, so the only difference is the rule.
# See tests/bench/README.md. Reports; exits non-zero only when something
# could not be measured (a 429 would show as a non-2xx response).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=${BENCH_RATELIMIT_TARGET:-0.8}
ALGORITHM=${BENCH_RATELIMIT_ALGORITHM:-gcra}
OUT=${BENCH_RATELIMIT_OUT:-$OUT_DIR/ratelimit.json}
ROUTE='/api/products/{id}'
URL_PATH=/api/products/p-0001
# 10^8 per hour: a bucket of 10^8 requests, far more than a run sends.
LIMIT=100000000
PERIOD=3600

check_number BENCH_RATELIMIT_TARGET "$TARGET"
case "$ALGORITHM" in gcra|sliding_window) ;; *) die "BENCH_RATELIMIT_ALGORITHM must be gcra or sliding_window (got '$ALGORITHM')" ;; esac
[ "$ALGORITHM" = gcra ] || LIMIT=$((ROUNDS * DURATION * 200000 + 10000000))  # the log keeps one entry per request
check_common

# --- temp dir: Lua tree, the two policy trees ---------------------------------
bench_tmp ratelimit
cp -R "$SRC/lua" "$TMP/lua"
cp -R "$SRC/policies" "$TMP/policies-plain"
cp -R "$SRC/policies" "$TMP/policies-limited"
cat > "$TMP/policies-plain/ratelimits.lua" <<'LUA'
-- written by tests/bench/ratelimit.sh: no rule at all
return { rules = {} }
LUA
cat > "$TMP/policies-limited/ratelimits.lua" <<LUA
-- written by tests/bench/ratelimit.sh: one rule on the measured route
return {
  rules = {
    { name = "bench", limit = $LIMIT, period = $PERIOD, algorithm = "$ALGORITHM", route = "$ROUTE", key = "ip" },
  },
}
LUA

read -r redis_port plain_port limited_port < <(free_ports 3)
log "ratelimit: temp dir $TMP; $WORKERS workers each; wrk -t$THREADS -c$CONNECTIONS; ${ROUNDS}x${DURATION}s per side; $ALGORITHM; $CPUS CPUs"

start_redis "$redis_port"
# One database for both (the second start finds it migrated).
start_engine engine-plain "$plain_port" "$TMP/lua" "$TMP/policies-plain" "$TMP/var/jj.db" RATELIMIT_ENABLED=true
E_PLAIN=$LAST_PID
start_engine engine-limited "$limited_port" "$TMP/lua" "$TMP/policies-limited" "$TMP/var/jj.db" RATELIMIT_ENABLED=true
E_LIMITED=$LAST_PID

# --- both answer the same product; only the limited one has the headers ------
check_side() {  # check_side NAME PORT yes|no
  local name=$1 port=$2 want=$3 code
  code=$(fetch "$port" "$URL_PATH" --timeout 5 --headers "$TMP/$name.headers" --body "$TMP/$name.body") \
    || die "$name: GET $URL_PATH failed"
  [ "$code" = 200 ] || die "$name: GET $URL_PATH answered $code"
  if grep -qi '^RateLimit-Policy: "bench";q=' "$TMP/$name.headers"; then
    [ "$want" = yes ] || die "$name: has RateLimit headers, expected none"
  else
    [ "$want" = no ] || die "$name: no RateLimit-Policy header (is the rule applied?)"
  fi
}
check_side engine-plain "$plain_port" no
check_side engine-limited "$limited_port" yes
cmp -s "$TMP/engine-plain.body" "$TMP/engine-limited.body" || die "the two engines answer different bodies"
log "both answer the same product ($(wc -c < "$TMP/engine-plain.body") bytes); only engine-limited sends RateLimit headers"

# --- measure ----------------------------------------------------------------
CPU_LOG=$TMP/cpu.txt
: > "$CPU_LOG"
measure() {  # measure NAME PORT PID FILE SECONDS
  local name=$1 port=$2 pid=$3 file=$4 secs=$5 s0 r0 rc=0
  s0=$(cpu_ticks "$pid"); r0=$(cpu_ticks "$REDIS_PID")
  run_wrk "$name" "$port" "$URL_PATH" "$secs" "$file" || rc=$?
  echo "$(basename "$file" .txt) $(cpu_delta "$s0" "$(cpu_ticks "$pid")") $(cpu_delta "$r0" "$(cpu_ticks "$REDIS_PID")")" >> "$CPU_LOG"
  return "$rc"
}

bad=0
measure engine-plain "$plain_port" "$E_PLAIN" "$TMP/wrk/plain-warmup.txt" "$WARMUP" || bad=1
measure engine-limited "$limited_port" "$E_LIMITED" "$TMP/wrk/limited-warmup.txt" "$WARMUP" || bad=1
alive
plain_files=() limited_files=()
for ((r = 1; r <= ROUNDS; r++)); do
  measure engine-plain "$plain_port" "$E_PLAIN" "$TMP/wrk/plain-round$r.txt" "$DURATION" || bad=1
  plain_files+=("$TMP/wrk/plain-round$r.txt")
  measure engine-limited "$limited_port" "$E_LIMITED" "$TMP/wrk/limited-round$r.txt" "$DURATION" || bad=1
  limited_files+=("$TMP/wrk/limited-round$r.txt")
  alive
done
# Still nothing refused, and the budget really was spent in Redis.
check_side engine-limited-after "$limited_port" yes
remaining=$(sed -n 's/^[Xx]-[Rr]ate[Ll]imit-[Rr]emaining: *//p' "$TMP/engine-limited-after.headers" | tr -d '\r')
log "engine-limited: X-RateLimit-Remaining $remaining of $LIMIT after the run"

if [ "$PROFILE" = 1 ]; then
  profile_workers "$E_LIMITED" "$(dirname "$OUT")/ratelimit-profile.txt" engine-limited "$DURATION" \
    run_wrk engine-limited "$limited_port" "$URL_PATH" "$DURATION" "$TMP/wrk/limited-profiled.txt"
fi

engine_errors engine-plain
engine_errors engine-limited

rc=0
python3 "$HERE/ratelimit_report.py" --out "$OUT" --target "$TARGET" \
  --meta workers="$WORKERS" threads="$THREADS" connections="$CONNECTIONS" duration_s="$DURATION" \
         rounds="$ROUNDS" warmup_s="$WARMUP" cpus="$CPUS" algorithm="$ALGORITHM" limit="$LIMIT" \
         period_s="$PERIOD" remaining_after="${remaining:-?}" path="$URL_PATH" engine_commit="$(engine_commit)" \
  --cpu "$CPU_LOG" --clk-tck "$CLK_TCK" \
  --plain "${plain_files[@]}" --limited "${limited_files[@]}" || rc=$?
if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
  die "some runs could not be measured cleanly (see above); the figures are not valid"
fi
exit 0
