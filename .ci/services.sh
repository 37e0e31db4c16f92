#!/usr/bin/env bash
# Makes sure the services the integration suite talks to are up: Postgres
# (127.0.0.1:5432, trust auth, database `test`), Redis (127.0.0.1:6379) and,
# when .ci/kafka.sh exists, a Kafka-protocol broker on 127.0.0.1:9092.
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for() { # name, command
  for _ in $(seq 1 60); do
    if eval "$2" >/dev/null 2>&1; then echo "$1 is up"; return 0; fi
    sleep 1
  done
  echo "$1 did not come up" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "starting Postgres"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
wait_for Postgres "pg_isready -h 127.0.0.1 -p 5432"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping"

if [ -f .ci/kafka.sh ]; then
  bash .ci/kafka.sh
fi
