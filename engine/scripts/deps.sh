#!/usr/bin/env bash
# Installs the Debian 12 packages JollyJet needs, only those missing.
#   engine/scripts/deps.sh run|test|bench
set -euo pipefail
what=${1:-run}
pkgs=(build-essential cmake pkg-config lua5.4 liblua5.4-dev libhiredis-dev libev-dev
      libsqlite3-dev libpq-dev lua-cjson redis-server)
case "$what" in
  run) ;;
  test) pkgs+=(lua-busted python3 python3-yaml curl valgrind clang lua-check chromium   # chromium: the dashboard test
              postgresql-15) ;;   # initdb/pg_ctl/psql: the PostgreSQL pass (run-tests.sh)
  bench) pkgs+=(lua-busted python3 nginx-light libnginx-mod-http-lua wrk valgrind) ;;   # valgrind: callgrind.sh
  *) echo "deps.sh: unknown set '$what' (run|test|bench)" >&2; exit 2 ;;
esac
# libFuzzer's runtime (tests/tools/fuzz.sh): clang only recommends it
if [ "$what" = test ]; then pkgs+=(libclang-rt-14-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
