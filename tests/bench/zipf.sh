#!/usr/bin/env bash
# Zipf benchmark: a mixed workload over 10,000 products. wrk's Lua script
# (zipf.lua) picks a product by Zipf(s=1.0) for each request and sends 95 %
# GET /api/products/{id}, 5 % PUT /api/products/{id} {"stock":n}. One engine
# (the shipped policies), one redis-server, one database in a temp dir.
#
# The database gets its 10,000 products before any product is read: the
# engine starts (migrations and the 240 seeded products), then the rest are
# inserted into the SQLite file directly (WAL: safe while the engine runs;
# nothing is cached yet, so no cached entry is bypassed).
#
# Reports requests, latency, non-2xx, the cache hit ratio and the database
# statements per 1,000 requests (see tests/bench/README.md). Reports; exits
# non-zero only when something could not be measured.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ZDURATION=${BENCH_ZIPF_DURATION:-20}
ZWARMUP=${BENCH_ZIPF_WARMUP:-10}
NPRODUCTS=${BENCH_ZIPF_PRODUCTS:-10000}
ZIPF_S=${BENCH_ZIPF_S:-1.0}
WRITE_PCT=${BENCH_ZIPF_WRITE_PCT:-5}
CONSISTENCY=${BENCH_ZIPF_CONSISTENCY:-shipped}
SEED=${BENCH_ZIPF_SEED:-1}
OUT=${BENCH_ZIPF_OUT:-$OUT_DIR/zipf.json}

check_ints ZDURATION NPRODUCTS SEED
[[ $ZWARMUP =~ ^[0-9]+$ ]] || die "BENCH_ZIPF_WARMUP must be an integer >= 0 (got '$ZWARMUP')"
(( NPRODUCTS >= 240 )) || die "BENCH_ZIPF_PRODUCTS must be >= 240 (the seeded products; got $NPRODUCTS)"
check_number BENCH_ZIPF_S "$ZIPF_S"
check_number BENCH_ZIPF_WRITE_PCT "$WRITE_PCT"
python3 -c 'import sys; sys.exit(0 if 0 <= float(sys.argv[1]) <= 100 else 1)' "$WRITE_PCT" \
  || die "BENCH_ZIPF_WRITE_PCT must be 0..100 (got $WRITE_PCT)"
case "$CONSISTENCY" in shipped|strong|bounded) ;; *) die "BENCH_ZIPF_CONSISTENCY must be shipped, strong or bounded (got '$CONSISTENCY')" ;; esac
check_common python3
WRITE_FRACTION=$(python3 -c 'import sys; print(float(sys.argv[1]) / 100)' "$WRITE_PCT")

bench_tmp zipf
cp -R "$SRC/lua" "$TMP/lua"
cp -R "$SRC/policies" "$TMP/policies"
if [ "$CONSISTENCY" != shipped ]; then
  # Same edit as products.sh: product = { consistency = ..., max_lag_ms = 1000 } last.
  python3 - "$TMP/policies/cache.lua" "$CONSISTENCY" <<'PY' || die "cannot edit the copy of policies/cache.lua"
import sys
path, mode = sys.argv[1], sys.argv[2]
src = open(path, encoding="utf-8").read()
end = src.rstrip().rfind("}")
head = src[:end].rstrip()
sep = "" if head.endswith((",", ";", "{")) else ","
src = (head + sep + "\n  -- added by tests/bench/zipf.sh\n"
       "  namespaces = { product = { consistency = \"" + mode + "\", max_lag_ms = 1000 } },\n" + src[end:])
open(path, "w", encoding="utf-8").write(src)
PY
fi

read -r redis_port engine_port < <(free_ports 2)
log "zipf: temp dir $TMP; $WORKERS workers; wrk -t$THREADS -c$CONNECTIONS; ${ZWARMUP}s warm-up + ${ZDURATION}s measured; Zipf(s=$ZIPF_S) over $NPRODUCTS products, $WRITE_PCT % writes; $CPUS CPUs"

start_redis "$redis_port"
DB=$TMP/var/jj.db
start_engine engine "$engine_port" "$TMP/lua" "$TMP/policies" "$DB"
E_PID=$LAST_PID

metrics() { python3 "$HERE/report.py" metrics "$@"; }   # metrics PORT OUT
dbstat() { python3 "$HERE/report.py" dbstat "$DB"; }

# --- 10,000 products, before any product is read ------------------------------
metrics "$engine_port" "$TMP/m-start.json" || die "GET /api/cache/metrics failed"
python3 - "$TMP/m-start.json" <<'PY' || die "the cache was used before the products were inserted"
import json, sys
m = json.load(open(sys.argv[1]))
sys.exit(1 if m["cacheHits"] or m["cacheMisses"] or m["loaderCalls"] else 0)
PY
read -r inserted total < <(python3 "$HERE/report.py" seed "$DB" "$NPRODUCTS") \
  || die "could not insert the products into $DB"
log "inserted $inserted products into the database ($total in all)"

# Sanity: the engine sees an inserted row; a PUT of the script's shape works.
last=$(printf 'p-%04d' "$NPRODUCTS")
code=$(fetch "$engine_port" "/api/products/$last" --timeout 5) || die "GET /api/products/$last failed"
[ "$code" = 200 ] || die "GET /api/products/$last answered $code (inserted rows not visible?)"
python3 - "$engine_port" "$last" <<'PY' || die "PUT /api/products/$last failed"
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("PUT", "/api/products/" + sys.argv[2], body='{"stock":7}', headers={"Content-Type": "application/json"})
r = c.getresponse(); body = r.read()
sys.exit(0 if r.status == 200 and json.loads(body)["stock"] == 7 else f"PUT answered {r.status}: {body[:200]!r}")
PY

# --- measure ----------------------------------------------------------------
ZARGS=(-s "$HERE/zipf.lua" -- "$NPRODUCTS" "$ZIPF_S" "$WRITE_FRACTION" "$SEED")
bad=0
metrics "$engine_port" "$TMP/m0.json" || die "GET /api/cache/metrics failed"
dbstat > "$TMP/db0.txt" || die "cannot read $DB"
warm_args=()
if [ "$ZWARMUP" -gt 0 ]; then
  run_wrk warm-up "$engine_port" / "$ZWARMUP" "$TMP/wrk/zipf-warmup.txt" "${ZARGS[@]}" || bad=1
  warm_args=(--warmup-wrk "$TMP/wrk/zipf-warmup.txt")
fi
alive
sleep 0.2   # let requests wrk gave up on at its deadline finish
metrics "$engine_port" "$TMP/m1.json" || die "GET /api/cache/metrics failed"
dbstat > "$TMP/db1.txt" || die "cannot read $DB"
s0=$(cpu_ticks "$E_PID"); r0=$(cpu_ticks "$REDIS_PID")
run_wrk measured "$engine_port" / "$ZDURATION" "$TMP/wrk/zipf.txt" "${ZARGS[@]}" || bad=1
echo "measured $(cpu_delta "$s0" "$(cpu_ticks "$E_PID")") $(cpu_delta "$r0" "$(cpu_ticks "$REDIS_PID")")" > "$TMP/cpu.txt"
alive
sleep 0.2
metrics "$engine_port" "$TMP/m2.json" || die "GET /api/cache/metrics failed"
dbstat > "$TMP/db2.txt" || die "cannot read $DB"

if [ "$PROFILE" = 1 ]; then
  profile_workers "$E_PID" "$(dirname "$OUT")/zipf-profile.txt" engine "$DURATION" \
    run_wrk profiled "$engine_port" / "$DURATION" "$TMP/wrk/zipf-profiled.txt" "${ZARGS[@]}"
fi

engine_errors engine

rc=0
python3 "$HERE/report.py" zipf --out "$OUT" \
  --meta workers="$WORKERS" threads="$THREADS" connections="$CONNECTIONS" duration_s="$ZDURATION" \
         warmup_s="$ZWARMUP" products="$NPRODUCTS" s="$ZIPF_S" write_pct="$WRITE_PCT" seed="$SEED" \
         consistency="$CONSISTENCY" \
         cpus="$CPUS" engine_commit="$(engine_commit)" \
  --wrk "$TMP/wrk/zipf.txt" "${warm_args[@]}" \
  --metrics "$TMP/m0.json" "$TMP/m1.json" "$TMP/m2.json" \
  --db "$TMP/db0.txt" "$TMP/db1.txt" "$TMP/db2.txt" \
  --cpu "$TMP/cpu.txt" --clk-tck "$CLK_TCK" || rc=$?
if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
  die "the run could not be measured cleanly (see above); the figures are not valid"
fi
exit 0
