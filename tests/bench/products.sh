#!/usr/bin/env bash
# Products benchmark: GET /api/products/{id} answered from the cache against
# nginx serving the same bytes from files. Two engines on one redis-server
# and one database, measured alternately with nginx in one run:
#   engine-redis  the shipped policies: product is "strong", so L1 is off and
#                 every GET is one Redis GET (an L2 hit)
#   engine-l1     a copy of the policies with product = { consistency =
#                 "bounded", max_lag_ms = 1000 }: GETs are per-worker L1 hits
# See tests/bench/README.md. Reports; exits non-zero only when something
# could not be measured.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET_REDIS=${BENCH_PRODUCTS_TARGET_REDIS:-0.9}
TARGET_L1=${BENCH_PRODUCTS_TARGET_L1:-1.0}
NIDS=${BENCH_PRODUCTS_IDS:-1}
MAX_LAG_MS=1000
OUT=${BENCH_PRODUCTS_OUT:-$OUT_DIR/products.json}

check_number BENCH_PRODUCTS_TARGET_REDIS "$TARGET_REDIS"
check_number BENCH_PRODUCTS_TARGET_L1 "$TARGET_L1"
if ! [[ $NIDS =~ ^[1-9][0-9]*$ ]] || (( NIDS > 240 )); then
  die "BENCH_PRODUCTS_IDS must be 1..240 (the seeded products; got '$NIDS')"
fi
check_common python3
check_nginx

# --- temp dir: Lua tree, the two policy trees ---------------------------------
bench_tmp products
cp -R "$SRC/lua" "$TMP/lua"
cp -R "$SRC/policies" "$TMP/policies"
cp -R "$SRC/policies" "$TMP/policies-l1"
# The L1 copy: product becomes bounded. Appended as the last field of the
# returned table, so it wins over a namespaces field the shipped file may have.
python3 - "$TMP/policies-l1/cache.lua" "$MAX_LAG_MS" <<'PY' || die "cannot edit the copy of policies/cache.lua"
import sys
path, lag = sys.argv[1], sys.argv[2]
src = open(path, encoding="utf-8").read()
end = src.rstrip().rfind("}")
if end < 0:
    sys.exit("policies/cache.lua: no closing brace")
head = src[:end].rstrip()
sep = "" if head.endswith((",", ";", "{")) else ","
src = (head + sep + "\n  -- added by tests/bench/products.sh\n"
       "  namespaces = { product = { consistency = \"bounded\", max_lag_ms = " + lag + " } },\n"
       + src[end:])
open(path, "w", encoding="utf-8").write(src)
PY

for ((i = 1; i <= NIDS; i++)); do printf 'p-%04d\n' "$i"; done > "$TMP/ids.txt"
HOT_ID=$(head -n 1 "$TMP/ids.txt")
if [ "$NIDS" -eq 1 ]; then
  URL_PATH=/api/products/$HOT_ID
  WRK_ARGS=()
else
  URL_PATH=/
  WRK_ARGS=(-s "$HERE/products.lua" -- "$TMP/ids.txt")
fi

read -r redis_port redis_engine_port l1_engine_port nginx_port < <(free_ports 4)
log "products: temp dir $TMP; $WORKERS workers each; wrk -t$THREADS -c$CONNECTIONS; ${ROUNDS}x${DURATION}s per side; $NIDS id(s); $CPUS CPUs"

start_redis "$redis_port"
# One database for both (the second start finds it migrated).
start_engine engine-redis "$redis_engine_port" "$TMP/lua" "$TMP/policies" "$TMP/var/jj.db"
E_REDIS=$LAST_PID
start_engine engine-l1 "$l1_engine_port" "$TMP/lua" "$TMP/policies-l1" "$TMP/var/jj.db"
E_L1=$LAST_PID

# --- the bytes nginx serves: what the engine answers -------------------------
read -r nsaved body_bytes < <(python3 "$HERE/report.py" save-products "$redis_engine_port" "$TMP/ids.txt" "$TMP/www") \
  || die "could not fetch the product JSON from engine-redis"
log "saved $nsaved product JSON bod$([ "$nsaved" -eq 1 ] && echo y || echo ies) ($body_bytes bytes) for nginx"
start_nginx "$HERE/nginx-products.conf.in" "$nginx_port" "/api/products/$HOT_ID"

# --- same bytes everywhere; the engines answer from the cache ----------------
verify() { python3 "$HERE/report.py" verify "$@" >&2; }
verify "$NGINX_PORT" "$TMP/ids.txt" "$TMP/www" --name nginx || die "nginx does not serve the saved bodies"
# engine-redis filled the cache while saving; engine-l1 (own key prefix) fills now.
verify "$redis_engine_port" "$TMP/ids.txt" "$TMP/www" --name engine-redis --x-cache HIT \
  || die "engine-redis does not answer the measured URLs from the cache"
verify "$l1_engine_port" "$TMP/ids.txt" "$TMP/www" --name engine-l1-fill || die "engine-l1 does not answer the same bytes"
verify "$l1_engine_port" "$TMP/ids.txt" "$TMP/www" --name engine-l1 --x-cache HIT \
  || die "engine-l1 does not answer the measured URLs from the cache"

metrics() { python3 "$HERE/report.py" metrics "$@"; }   # metrics PORT OUT

# --- measure ----------------------------------------------------------------
CPU_LOG=$TMP/cpu.txt
: > "$CPU_LOG"
# measure NAME PORT PID FILE SECONDS: one run, with the CPU (user, system)
# its server (master + workers) and redis-server used.
measure() {
  local name=$1 port=$2 pid=$3 file=$4 secs=$5 s0 r0 rc=0
  s0=$(cpu_ticks "$pid"); r0=$(cpu_ticks "$REDIS_PID")
  run_wrk "$name" "$port" "$URL_PATH" "$secs" "$file" "${WRK_ARGS[@]}" || rc=$?
  echo "$(basename "$file" .txt) $(cpu_delta "$s0" "$(cpu_ticks "$pid")") $(cpu_delta "$r0" "$(cpu_ticks "$REDIS_PID")")" >> "$CPU_LOG"
  return "$rc"
}

bad=0
measure nginx "$NGINX_PORT" "$NGINX_PID" "$TMP/wrk/nginx-warmup.txt" "$WARMUP" || bad=1
m0=$TMP/l1-warm0.json
metrics "$l1_engine_port" "$m0" || die "GET /api/cache/metrics failed on engine-l1"
measure engine-redis "$redis_engine_port" "$E_REDIS" "$TMP/wrk/redis-warmup.txt" "$WARMUP" || bad=1
measure engine-l1 "$l1_engine_port" "$E_L1" "$TMP/wrk/l1-warmup.txt" "$WARMUP" || bad=1
alive
# Both workers of engine-l1 now hold the hot entries: check L1 answers.
metrics "$l1_engine_port" "$TMP/l1-warm1.json" || die "GET /api/cache/metrics failed on engine-l1"
python3 - "$m0" "$TMP/l1-warm1.json" <<'PY' >&2 || die "engine-l1 did not serve the warm-up from L1"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
l1, l2 = b["l1Hits"] - a["l1Hits"], b["l2Hits"] - a["l2Hits"]
print(f"bench: engine-l1 warm-up: L1 hits +{l1}, L2 hits +{l2}")
sys.exit(0 if l1 > 0 and l1 >= 0.9 * (l1 + l2) else 1)
PY

metrics "$redis_engine_port" "$TMP/redis-before.json" || die "GET /api/cache/metrics failed on engine-redis"
metrics "$l1_engine_port" "$TMP/l1-before.json" || die "GET /api/cache/metrics failed on engine-l1"
nginx_files=() redis_files=() l1_files=()
for ((r = 1; r <= ROUNDS; r++)); do
  measure nginx "$NGINX_PORT" "$NGINX_PID" "$TMP/wrk/nginx-round$r.txt" "$DURATION" || bad=1
  nginx_files+=("$TMP/wrk/nginx-round$r.txt")
  measure engine-redis "$redis_engine_port" "$E_REDIS" "$TMP/wrk/redis-round$r.txt" "$DURATION" || bad=1
  redis_files+=("$TMP/wrk/redis-round$r.txt")
  measure engine-l1 "$l1_engine_port" "$E_L1" "$TMP/wrk/l1-round$r.txt" "$DURATION" || bad=1
  l1_files+=("$TMP/wrk/l1-round$r.txt")
  alive
done
metrics "$redis_engine_port" "$TMP/redis-after.json" || die "GET /api/cache/metrics failed on engine-redis"
metrics "$l1_engine_port" "$TMP/l1-after.json" || die "GET /api/cache/metrics failed on engine-l1"

# Optional: profile both engines' workers under the same load (BENCH_PROFILE=1).
if [ "$PROFILE" = 1 ]; then
  profile_workers "$E_REDIS" "$(dirname "$OUT")/products-profile-redis.txt" engine-redis "$DURATION" \
    run_wrk engine-redis "$redis_engine_port" "$URL_PATH" "$DURATION" "$TMP/wrk/redis-profiled.txt" "${WRK_ARGS[@]}"
  profile_workers "$E_L1" "$(dirname "$OUT")/products-profile-l1.txt" engine-l1 "$DURATION" \
    run_wrk engine-l1 "$l1_engine_port" "$URL_PATH" "$DURATION" "$TMP/wrk/l1-profiled.txt" "${WRK_ARGS[@]}"
fi

engine_errors engine-redis
engine_errors engine-l1

rc=0
python3 "$HERE/report.py" products --out "$OUT" \
  --target-redis "$TARGET_REDIS" --target-l1 "$TARGET_L1" \
  --meta workers="$WORKERS" threads="$THREADS" connections="$CONNECTIONS" duration_s="$DURATION" \
         rounds="$ROUNDS" warmup_s="$WARMUP" ids="$NIDS" hot_id="$HOT_ID" body_bytes="$body_bytes" \
         max_lag_ms="$MAX_LAG_MS" cpus="$CPUS" \
         nginx_version="$(nginx_version)" engine_commit="$(engine_commit)" \
  --cpu "$CPU_LOG" --clk-tck "$CLK_TCK" \
  --metrics-redis "$TMP/redis-before.json" "$TMP/redis-after.json" \
  --metrics-l1 "$TMP/l1-before.json" "$TMP/l1-after.json" \
  --nginx "${nginx_files[@]}" --redis "${redis_files[@]}" --l1 "${l1_files[@]}" || rc=$?
if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
  die "some runs could not be measured cleanly (see above); the figures are not valid"
fi
exit 0
