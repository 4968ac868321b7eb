#!/usr/bin/env bash
# make test: install, build (normal and ASan+UBSan), start a redis-server on a
# free loopback port, run every test through ctest in both builds, stop it.
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
cleanup() {
  [ -f "$tmp/redis.pid" ] && kill "$(cat "$tmp/redis.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
export JJ_TEST_REDIS_PORT=$port

status=0
echo "== ctest (build)"
ctest --test-dir build --output-on-failure ${CTEST_ARGS:-} || status=1
if [ "${JJ_SKIP_ASAN:-0}" != 1 ]; then
  echo "== ctest (build-asan: AddressSanitizer + UndefinedBehaviorSanitizer)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -LE valgrind ${CTEST_ARGS:-} || status=1
fi
# libFuzzer targets, in CI or when JJ_FUZZ_SECONDS is set (60 s each by default)
if [ "${CI:-}" = true ] || [ -n "${JJ_FUZZ_SECONDS:-}" ]; then
  echo "== fuzz (tests/tools/fuzz.sh: ${JJ_FUZZ_SECONDS:-60} s per target)"
  tests/tools/fuzz.sh "${JJ_FUZZ_SECONDS:-60}" || status=1
fi
exit $status
