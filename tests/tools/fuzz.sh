#!/usr/bin/env bash
# The libFuzzer targets (README "Fuzzing"): builds them with clang in
# build-fuzz (ASan+UBSan) and runs each for SECONDS (or RUNS inputs) on a copy
# of its seed corpus (tests/fuzz/corpus/<target>), with its dictionary. Any
# crash, sanitizer report, timeout or invariant failure fails the run; the
# input is kept in build-fuzz/artifacts/.
#   tests/tools/fuzz.sh [SECONDS=60] [RUNS]     e.g. tests/tools/fuzz.sh 3600 10000000
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
runs=${2:--1}
targets=(fuzz_http_parser fuzz_json_body fuzz_policy_schema)
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJJ_FUZZ=ON -DJJ_SANITIZE=ON \
  -DJJ_WERROR=ON >/dev/null
cmake --build build-fuzz -j"${JOBS:-2}" --target "${targets[@]}" >/dev/null
mkdir -p build-fuzz/artifacts
status=0
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  work=$(mktemp -d /tmp/jj-fuzz.XXXXXX)
  dict=()
  case $name in json_body) dict=(-dict=tests/fuzz/json.dict) ;; policy_schema) dict=(-dict=tests/fuzz/policy.dict) ;; esac
  if build-fuzz/tests/$t -max_total_time="$secs" -runs="$runs" -timeout=25 -print_final_stats=1 "${dict[@]}" \
       -artifact_prefix="build-fuzz/artifacts/$name-" "$work" "tests/fuzz/corpus/$name" >"$work.log" 2>&1; then
    printf '%-20s ok   %s\n' "$name" "$(grep -E '^#[0-9]+.*(DONE|pulse)' "$work.log" | tail -1)"
  else
    status=1
    printf '%-20s FAIL (log below; input in build-fuzz/artifacts/)\n' "$name"
    grep -v -E '^#[0-9]+.*(NEW|REDUCE|pulse)' "$work.log" | tail -60
  fi
  rm -rf "$work" "$work.log"
done
exit $status
