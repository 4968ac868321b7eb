#!/usr/bin/env bash
# make bench: every benchmark, one after the other, each with its own
# servers and temp dir (see tests/bench/README.md):
#   sweep     issue 11's table: Lua route, Redis-hit and L1 products vs nginx
#             static (sendfile, open_file_cache) and OpenResty-style peers,
#             at 1, 2 and 4 workers                                   (sweep.sh)
#   core      a Lua route vs nginx serving the same 400-byte body   (core.sh)
#   products  GET /api/products/{id} from Redis and from L1 vs nginx (products.sh)
#   zipf      Zipf(1.0) reads + 5 % writes over 10,000 products      (zipf.sh)
#   ratelimit GET /api/products/{id} with a rate-limit rule vs without (ratelimit.sh)
# BENCH_ONLY=sweep|core|products|zipf|ratelimit (or a comma list) runs only those.
# tests/bench/callgrind.sh (instructions per request) is run by hand.
#
# Each prints its report and writes build/bench/<name>.json. A missed target
# is reported, not failed; the exit status is non-zero when some benchmark
# could not be measured (its own exit status says why).
# shellcheck disable=SC2317  # forward runs from the traps
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALL=(sweep core products zipf ratelimit)
ONLY=${BENCH_ONLY:-sweep,core,products,zipf,ratelimit}

selected=()
IFS=', ' read -r -a want <<< "$ONLY"
for w in "${want[@]}"; do
  [ -n "$w" ] || continue
  case " ${ALL[*]} " in
    *" $w "*) selected+=("$w") ;;
    *) printf 'bench: ERROR: BENCH_ONLY: unknown benchmark %s (one of: %s)\n' "$w" "${ALL[*]}" >&2; exit 2 ;;
  esac
done
[ "${#selected[@]}" -gt 0 ] || { printf 'bench: ERROR: BENCH_ONLY selects nothing\n' >&2; exit 2; }

# Each benchmark runs as a background job in its own process group (set -m):
# Ctrl-C reaches this script only, which passes TERM on; the benchmark's trap
# then stops its servers in order (they are in its group, not the terminal's).
set -m
CHILD="" INTERRUPTED=0
forward() { INTERRUPTED=$1; [ -z "$CHILD" ] || kill -s TERM "$CHILD" 2>/dev/null || true; }
trap 'forward 130' INT
trap 'forward 143' TERM

results=()
status=0
for b in "${selected[@]}"; do
  "$HERE/$b.sh" &
  CHILD=$!
  rc=0
  # wait returns early when a signal arrives; the child then stops (bounded
  # by its own stop timeouts), so a few more waits are enough.
  for ((i = 0; i < 20; i++)); do
    rc=0; wait "$CHILD" || rc=$?
    kill -0 "$CHILD" 2>/dev/null || break
  done
  CHILD=""
  results+=("$b: $([ "$rc" -eq 0 ] && echo measured || echo "NOT MEASURED (exit $rc)")")
  [ "$rc" -eq 0 ] || status=1
  [ "$INTERRUPTED" -eq 0 ] || exit "$INTERRUPTED"
done

if [ "${#selected[@]}" -gt 1 ]; then
  printf '\n== make bench: %s ==\n' "$(IFS=,; echo "${selected[*]}")"
  printf '   %s\n' "${results[@]}"
fi
exit "$status"
