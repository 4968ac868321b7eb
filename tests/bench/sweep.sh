#!/usr/bin/env bash
# The sweep (issue 11's table): each path of the engine next to nginx
# serving the same bytes from files at its best (sendfile, open_file_cache)
# and next to an OpenResty-style peer (Debian's nginx + libnginx-mod-http-lua),
# at 1, 2 and 4 workers (BENCH_SWEEP_WORKERS), measured alternately in one
# run, BENCH_SWEEP_IDS (100) product ids cycled:
#
#   lua      GET /bench/fixed (handlers/bench.lua, 400 B)  vs  content_by_lua, same 400 B
#   redis    GET /api/products/{id}, the shipped policy (a Redis GET per request)
#                                                            vs  a Redis GET over ngx.socket.tcp
#   l1       the same with product "bounded" (per-worker L1) vs  a per-worker table, 1 s TTL
#
# Ratios are req/s over nginx static's for the same URLs; CPU per request is
# user + system time of the server's processes (master + workers, from
# /proc/<pid>/stat) over the run divided by its requests, redis-server's
# apart. See tests/bench/README.md. Reports; exits non-zero only when
# something could not be measured.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SWEEP=${BENCH_SWEEP_WORKERS:-1 2 4}
NIDS=${BENCH_SWEEP_IDS:-100}
OUT=${BENCH_SWEEP_OUT:-$OUT_DIR/sweep.json}
LUA_MODULE=/usr/lib/nginx/modules/ngx_http_lua_module.so
PREFIX=orbench:product:
for w in $SWEEP; do [[ $w =~ ^[1-9][0-9]*$ ]] || die "BENCH_SWEEP_WORKERS: '$w' is not a worker count"; done
if ! [[ $NIDS =~ ^[1-9][0-9]*$ ]] || (( NIDS > 240 )); then
  die "BENCH_SWEEP_IDS must be 1..240 (the seeded products; got '$NIDS')"
fi
check_common lua5.4
check_nginx
[ -f "$LUA_MODULE" ] || die "no $LUA_MODULE (engine/scripts/deps.sh bench installs libnginx-mod-http-lua)"

# --- temp dir -------------------------------------------------------------------
bench_tmp sweep
mkdir -p "$TMP/nginx-static" "$TMP/nginx-lua"
cp -R "$SRC/lua" "$TMP/lua"
cp "$HERE/handlers/bench.lua" "$TMP/lua/handlers/bench.lua"
cp -R "$SRC/policies" "$TMP/policies"
cp -R "$SRC/policies" "$TMP/policies-l1"
python3 - "$TMP/policies-l1/cache.lua" <<'PY' || die "cannot edit the copy of policies/cache.lua"
import sys
path = sys.argv[1]
src = open(path, encoding="utf-8").read()
end = src.rstrip().rfind("}")
head = src[:end].rstrip()
sep = "" if head.endswith((",", ";", "{")) else ","
open(path, "w", encoding="utf-8").write(
    head + sep + "\n  -- added by tests/bench/sweep.sh\n"
    "  namespaces = { product = { consistency = \"bounded\", max_lag_ms = 1000 } },\n" + src[end:])
PY
HANDLER="$HERE/handlers/bench.lua" lua5.4 -e 'io.write(dofile(os.getenv("HANDLER")).body)' > "$TMP/www/fixed.json"
chmod 644 "$TMP/www/fixed.json"
[ "$(wc -c < "$TMP/www/fixed.json")" -eq 400 ] || die "the bench body is not 400 bytes"
for ((i = 1; i <= NIDS; i++)); do printf 'p-%04d\n' "$i"; done > "$TMP/ids.txt"
WRK_IDS=(-s "$HERE/products.lua" -- "$TMP/ids.txt")

read -r redis_port < <(free_ports 1)
start_redis "$redis_port"
log "sweep: temp dir $TMP; workers: $SWEEP; wrk -t$THREADS -c$CONNECTIONS; ${ROUNDS}x${DURATION}s per side; $NIDS ids; $CPUS CPUs"

# start_nginx_conf NAME TEMPLATE PORT PORT_TABLE: sets LAST_PID (an extra nginx).
start_nginx_conf() {
  local name=$1 tpl=$2 port=$3 port2=$4
  sed -e "s|@TMP@|$TMP|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$port|g" -e "s|@PORT_TABLE@|$port2|g" \
      -e "s|@REDIS_PORT@|$REDIS_PORT|g" -e "s|@PREFIX@|$PREFIX|g" "$tpl" > "$TMP/$name.conf"
  "$NGINX" -p "$TMP/" -e "$TMP/$name/error.log" -c "$TMP/$name.conf" -g 'daemon off;' \
    >"$TMP/$name/stdout.log" 2>&1 &
  LAST_PID=$!
  EXTRA_NGINX_PIDS+=("$LAST_PID")
  # shellcheck disable=SC2329 # used through wait_for
  up() { [ "$(fetch "$port" /bench/fixed --timeout 1 2>/dev/null)" = 200 ]; }
  wait_for 10 "$name on 127.0.0.1:$port" "$LAST_PID" up \
    || { show_log "$name" "$TMP/$name/stdout.log"; show_log "$name" "$TMP/$name/error.log"; die "$name did not start"; }
}

# same_fixed NAME PORT: 200, application/json and the 400 bytes.
same_fixed() {
  local code ctype
  code=$(fetch "$2" /bench/fixed --timeout 5 --headers "$TMP/$1.h" --body "$TMP/$1.b") || die "$1: GET /bench/fixed failed"
  [ "$code" = 200 ] || die "$1: GET /bench/fixed answered $code"
  ctype=$(sed -n 's/^[Cc]ontent-[Tt]ype: *//p' "$TMP/$1.h" | head -n 1)
  [ "$ctype" = application/json ] || die "$1: Content-Type '$ctype'"
  cmp -s "$TMP/$1.b" "$TMP/www/fixed.json" || die "$1: /bench/fixed body differs from the 400 bytes"
}
verify() { python3 "$HERE/report.py" verify "$@" >&2; }

RUNS=$TMP/runs.txt
: > "$RUNS"
bad=0
# measure W ROW SIDE ROUND PORT PID PATH [WRK_ARGS...]: one wrk run and the CPU
# its server and redis-server used; a line of $RUNS.
measure() {
  local w=$1 row=$2 sidename=$3 round=$4 port=$5 pid=$6 path=$7 s0 r0 rc=0; shift 7
  local file=$TMP/wrk/w$w-$row-$sidename-$round.txt
  s0=$(cpu_ticks "$pid"); r0=$(cpu_ticks "$REDIS_PID")
  run_wrk "w$w-$row-$sidename" "$port" "$path" "$( [ "$round" = warmup ] && echo "$WARMUP" || echo "$DURATION")" "$file" "$@" || rc=$?
  echo "$w $row $sidename $round $file $(cpu_delta "$s0" "$(cpu_ticks "$pid")") $(cpu_delta "$r0" "$(cpu_ticks "$REDIS_PID")")" >> "$RUNS"
  [ "$rc" -eq 0 ] || bad=1
}

saved=0
for W in $SWEEP; do
  WORKERS=$W
  read -r p_main p_l1 p_static p_lua p_table < <(free_ports 5)
  start_engine "engine-w$W" "$p_main" "$TMP/lua" "$TMP/policies" "$TMP/var/jj-w$W.db"
  E_MAIN=$LAST_PID
  start_engine "engine-l1-w$W" "$p_l1" "$TMP/lua" "$TMP/policies-l1" "$TMP/var/jj-w$W.db"
  E_L1=$LAST_PID
  if [ "$saved" = 0 ]; then
    # The bytes nginx serves and the peer's Redis holds: what the engine answers.
    python3 "$HERE/report.py" save-products "$p_main" "$TMP/ids.txt" "$TMP/www" >/dev/null \
      || die "could not fetch the product JSON from the engine"
    python3 - "$REDIS_PORT" "$PREFIX" "$TMP/ids.txt" "$TMP/www/api/products" <<'PY' || die "could not store the peer's bodies in redis"
import socket, sys
port, prefix, ids, d = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
f = s.makefile("rb")
for pid in open(ids).read().split():
    body = open(f"{d}/{pid}", "rb").read()
    key = (prefix + pid).encode()
    s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(body), body))
    line = f.readline()
    if line != b"+OK\r\n":
        sys.exit(f"SET {key!r}: {line!r}")
PY
    saved=1
  fi
  start_nginx_conf nginx-static "$HERE/nginx-static.conf.in" "$p_static" 0
  N_STATIC=$LAST_PID
  start_nginx_conf nginx-lua "$HERE/nginx-lua.conf.in" "$p_lua" "$p_table"
  N_LUA=$LAST_PID

  same_fixed "static-w$W" "$p_static"
  same_fixed "engine-w$W" "$p_main"
  same_fixed "openresty-w$W" "$p_lua"
  verify "$p_static" "$TMP/ids.txt" "$TMP/www" --name "nginx-static-w$W" || die "nginx static: not the saved bodies"
  verify "$p_main" "$TMP/ids.txt" "$TMP/www" --name "engine-redis-w$W-fill" || die "engine: not the saved bodies"
  verify "$p_main" "$TMP/ids.txt" "$TMP/www" --name "engine-redis-w$W" --x-cache HIT || die "engine: not a cache hit"
  verify "$p_l1" "$TMP/ids.txt" "$TMP/www" --name "engine-l1-w$W-fill" || die "engine-l1: not the saved bodies"
  verify "$p_l1" "$TMP/ids.txt" "$TMP/www" --name "engine-l1-w$W" --x-cache HIT || die "engine-l1: not a cache hit"
  verify "$p_lua" "$TMP/ids.txt" "$TMP/www" --name "openresty-redis-w$W" || die "openresty: not the saved bodies"
  verify "$p_table" "$TMP/ids.txt" "$TMP/www" --name "openresty-table-w$W" || die "openresty table: not the saved bodies"
  log "w$W: every side answers the same bytes"

  # rows: ROW SIDE PORT PID PATH WRK_ARGS...
  sides() {
    local round=$1
    measure "$W" lua static "$round" "$p_static" "$N_STATIC" /bench/fixed
    measure "$W" lua engine "$round" "$p_main" "$E_MAIN" /bench/fixed
    measure "$W" lua peer "$round" "$p_lua" "$N_LUA" /bench/fixed
    measure "$W" products static "$round" "$p_static" "$N_STATIC" / "${WRK_IDS[@]}"
    measure "$W" products redis "$round" "$p_main" "$E_MAIN" / "${WRK_IDS[@]}"
    measure "$W" products peer-redis "$round" "$p_lua" "$N_LUA" / "${WRK_IDS[@]}"
    measure "$W" products l1 "$round" "$p_l1" "$E_L1" / "${WRK_IDS[@]}"
    measure "$W" products peer-table "$round" "$p_table" "$N_LUA" / "${WRK_IDS[@]}"
  }
  sides warmup
  for ((r = 1; r <= ROUNDS; r++)); do
    sides "$r"
    for pid in "$E_MAIN" "$E_L1" "$N_STATIC" "$N_LUA" "$REDIS_PID"; do
      kill -0 "$pid" 2>/dev/null || { tail -n 20 "$TMP"/*.log "$TMP"/nginx-*/error.log >&2 || true; die "a server (pid $pid) exited during the run"; }
    done
  done
  python3 "$HERE/report.py" metrics "$p_l1" "$TMP/l1-w$W.json" || die "GET /api/cache/metrics failed on engine-l1"
  python3 "$HERE/report.py" metrics "$p_main" "$TMP/redis-w$W.json" || die "GET /api/cache/metrics failed on the engine"
  engine_errors "engine-w$W"
  engine_errors "engine-l1-w$W"
  if [ -s "$TMP/nginx-lua/error.log" ] && grep -q '\[error\]' "$TMP/nginx-lua/error.log"; then
    log "the OpenResty peer logged errors:"; grep -m 5 '\[error\]' "$TMP/nginx-lua/error.log" >&2; bad=1
  fi
  stop "$E_MAIN" TERM 10; stop "$E_L1" TERM 10; stop "$N_STATIC" TERM 5; stop "$N_LUA" TERM 5
done

rc=0
python3 "$HERE/sweep_report.py" --out "$OUT" --runs "$RUNS" --clk-tck "$CLK_TCK" --metrics-dir "$TMP" \
  --meta threads="$THREADS" connections="$CONNECTIONS" duration_s="$DURATION" rounds="$ROUNDS" \
         warmup_s="$WARMUP" ids="$NIDS" cpus="$CPUS" nginx_version="$(nginx_version)" \
         engine_commit="$(engine_commit)" date="$(date -u +%Y-%m-%dT%H:%MZ)" || rc=$?
if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
  die "some runs could not be measured cleanly (see above); the figures are not valid"
fi
exit 0
