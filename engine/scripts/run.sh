#!/usr/bin/env bash
# make run: build, make sure a Redis answers (start one under var/ when
# nothing does), then serve (migrations and seeding run at start).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build}
mkdir -p var
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
if [ -n "${REDIS_URL:-}" ]; then
  hp=${REDIS_URL#redis://}; hp=${hp##*@}; hp=${hp%%/*}
  host=${hp%%:*}; [ "$hp" != "$host" ] && port=${hp##*:}
fi
if ! redis-cli -h "$host" -p "$port" ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} --no-auth-warning ping 2>/dev/null | grep -q PONG; then
  if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
    echo "no Redis at $host:$port: starting redis-server with its data in var/redis" >&2
    mkdir -p var/redis
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/var/redis" --daemonize yes \
      --pidfile "$PWD/var/redis/redis.pid" --logfile "$PWD/var/redis/redis.log" \
      --appendonly yes ${REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD"}
    for _ in $(seq 50); do
      redis-cli -h "$host" -p "$port" ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} --no-auth-warning ping 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
  else
    echo "warning: no Redis answers at $host:$port; serving from the database until it does" >&2
  fi
fi
exec "$build/jollyjet" serve
