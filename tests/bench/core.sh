#!/usr/bin/env bash
# Core benchmark: a Lua route of the engine against nginx serving the same
# 400-byte JSON body, both with the same worker count, measured alternately
# with wrk in one run on one machine. See tests/bench/README.md.
#
# Reports; does not fail on a missed target. Exits non-zero only when
# something could not be measured (a server did not start, the bodies differ,
# wrk failed or saw socket errors / non-2xx responses).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=${BENCH_TARGET:-0.9}
OUT=${BENCH_OUT:-$OUT_DIR/core.json}
BODY_BYTES=400
PATH_=/bench/fixed

check_number BENCH_TARGET "$TARGET"
check_common lua5.4
check_nginx

# --- temp dir: Lua tree with the bench handler, the body file -------------
bench_tmp core
cp -R "$SRC/lua" "$TMP/lua"
cp -R "$SRC/policies" "$TMP/policies"
mkdir -p "$TMP/lua/handlers"
cp "$HERE/handlers/bench.lua" "$TMP/lua/handlers/bench.lua"
# The nginx file gets the very bytes the handler builds (one source of truth).
HANDLER="$HERE/handlers/bench.lua" lua5.4 -e 'io.write(dofile(os.getenv("HANDLER")).body)' > "$TMP/www/fixed.json"
chmod 755 "$TMP/www"; chmod 644 "$TMP/www/fixed.json"
size=$(wc -c < "$TMP/www/fixed.json")
[ "$size" -eq "$BODY_BYTES" ] || die "body file is $size bytes, expected $BODY_BYTES"

read -r redis_port ENGINE_PORT nginx_port < <(free_ports 3)
log "core: temp dir $TMP; $WORKERS workers each; wrk -t$THREADS -c$CONNECTIONS; ${ROUNDS}x${DURATION}s per side; $CPUS CPUs"

start_redis "$redis_port"
start_engine engine "$ENGINE_PORT" "$TMP/lua" "$TMP/policies" "$TMP/var/jj.db"
ENGINE_PID=$LAST_PID
start_nginx "$HERE/nginx.conf.in" "$nginx_port" "$PATH_"

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
bad=0
run_wrk nginx "$NGINX_PORT" "$PATH_" "$WARMUP" "$TMP/wrk/nginx-warmup.txt" || bad=1
run_wrk engine "$ENGINE_PORT" "$PATH_" "$WARMUP" "$TMP/wrk/engine-warmup.txt" || bad=1
alive
nginx_files=() engine_files=()
for ((r = 1; r <= ROUNDS; r++)); do
  run_wrk nginx "$NGINX_PORT" "$PATH_" "$DURATION" "$TMP/wrk/nginx-round$r.txt" || bad=1
  nginx_files+=("$TMP/wrk/nginx-round$r.txt")
  run_wrk engine "$ENGINE_PORT" "$PATH_" "$DURATION" "$TMP/wrk/engine-round$r.txt" || bad=1
  engine_files+=("$TMP/wrk/engine-round$r.txt")
  alive
done

# Optional: profile the engine workers under the same load (BENCH_PROFILE=1).
if [ "$PROFILE" = 1 ]; then
  profile_workers "$ENGINE_PID" "$(dirname "$OUT")/core-profile.txt" engine "$DURATION" \
    run_wrk engine "$ENGINE_PORT" "$PATH_" "$DURATION" "$TMP/wrk/engine-profiled.txt"
fi

engine_errors engine

rc=0
python3 "$HERE/report.py" report --out "$OUT" --target "$TARGET" \
  --meta workers="$WORKERS" threads="$THREADS" connections="$CONNECTIONS" duration_s="$DURATION" \
         rounds="$ROUNDS" warmup_s="$WARMUP" body_bytes="$BODY_BYTES" cpus="$CPUS" \
         nginx_version="$(nginx_version)" engine_commit="$(engine_commit)" \
  --nginx "${nginx_files[@]}" --engine "${engine_files[@]}" || rc=$?
if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
  die "some runs could not be measured cleanly (see above); the figures are not valid"
fi
exit 0
