#!/usr/bin/env bash
# make test: install, build (normal and ASan+UBSan), start a redis-server and
# a throwaway PostgreSQL 15 cluster on free loopback ports, run every test
# through ctest in both builds (SQLite), then the integration tests and the
# specs again on PostgreSQL (normal build), stop both.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
engine/scripts/deps.sh test
jobs=${JOBS:-2}

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJJ_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
if [ "${JJ_SKIP_ASAN:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DJJ_SANITIZE=ON -DJJ_WERROR=ON >/dev/null
  cmake --build build-asan -j"$jobs"
fi

tmp=$(mktemp -d /tmp/jj-test.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$tmp" --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log"
pgbin=/usr/lib/postgresql/15/bin
pgdir=$(mktemp -d /tmp/jj-pg.XXXXXX)
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
asuser=()   # initdb refuses root: the cluster belongs to postgres (created by the postgresql-15 package)
if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir"; asuser=(runuser -u postgres --); fi
cleanup() {
  "${asuser[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
  [ -f "$tmp/redis.pid" ] && kill "$(cat "$tmp/redis.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
export JJ_TEST_REDIS_PORT=$port
# fault tests write their figures here; one table of them ends the run
export JJ_FIGURES_DIR=$root/build/figures
rm -rf "$JJ_FIGURES_DIR" && mkdir -p "$JJ_FIGURES_DIR"
# durability off: the cluster is thrown away; unix socket only in its own dir
"${asuser[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-locale >"$pgdir/initdb.log"
"${asuser[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 60 -o "-c listen_addresses=127.0.0.1 \
  -p $pgport -k $pgdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
export JJ_TEST_PG_URL="postgres://postgres@127.0.0.1:$pgport/postgres"   # unit.test_db_pg, every pass

status=0
echo "== ctest (build)"
ctest --test-dir build --output-on-failure ${CTEST_ARGS:-} || status=1
if [ "${JJ_SKIP_ASAN:-0}" != 1 ]; then
  echo "== ctest (build-asan: AddressSanitizer + UndefinedBehaviorSanitizer)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -LE valgrind ${CTEST_ARGS:-} || status=1
fi
echo "== ctest (build, PostgreSQL $pgport: integration tests and specs with DATABASE_URL)"
JJ_TEST_DATABASE_URL=$JJ_TEST_PG_URL ctest --test-dir build --output-on-failure -L 'integration|spec' \
  ${CTEST_ARGS:-} || status=1
# libFuzzer targets, in CI or when JJ_FUZZ_SECONDS is set (60 s each by default)
if [ "${CI:-}" = true ] || [ -n "${JJ_FUZZ_SECONDS:-}" ]; then
  echo "== fuzz (tests/tools/fuzz.sh: ${JJ_FUZZ_SECONDS:-60} s per target)"
  tests/tools/fuzz.sh "${JJ_FUZZ_SECONDS:-60}" || status=1
fi
python3 tests/tools/figures.py "$JJ_FIGURES_DIR" || true   # one table of the fault figures ends the run
exit $status
