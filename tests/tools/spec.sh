#!/usr/bin/env bash
# Runs spec/ with busted inside the engine (jollyjet spec), against the test
# Redis that make test started (JJ_TEST_REDIS_PORT), on a throwaway database.
set -euo pipefail
bin=$1; shift
cd "${JJ_SOURCE_DIR:-$(dirname "$0")/../..}"
: "${JJ_TEST_REDIS_PORT:?JJ_TEST_REDIS_PORT is not set: run the suite with make test}"
tmp=$(mktemp -d /tmp/jj-spec.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unset DATABASE_URL
if [ -n "${JJ_TEST_DATABASE_URL:-}" ]; then   # the PostgreSQL pass: a fresh database
  name="jj_spec_$$_$(date +%s)"
  psql "$JJ_TEST_DATABASE_URL" -X -q -c "CREATE DATABASE $name STRATEGY FILE_COPY"
  export DATABASE_URL="${JJ_TEST_DATABASE_URL%/*}/$name"
fi
REDIS_HOST=127.0.0.1 REDIS_PORT=$JJ_TEST_REDIS_PORT REDIS_KEY_PREFIX="spec$$:" \
DB_PATH="$tmp/spec.db" LUA_DIR=lua POLICY_DIR=policies LOG_LEVEL=warn \
  "$bin" spec --output=plainTerminal -p _spec spec "$@"
