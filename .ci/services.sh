#!/usr/bin/env bash
# Starts PostgreSQL, MariaDB and Redis on 127.0.0.1 when they are down and waits (bounded) until each answers.
# Exit 1 with one line naming the service when one is missing, cannot start, or does not answer in time: the
# service tests fail (never skip) under CI=true, but CI should stop here rather than after minutes of tests.
# Tested by tests/ci/test_ci_services.py (with stand-in commands on PATH).
set -uo pipefail
WAIT_S=${HPSEARCH_CI_SERVICE_WAIT_S:-60}

fail() { echo "ci: $*"; exit 1; }
wait_for() {  # NAME SECONDS CHECK...: poll CHECK every second until it succeeds or SECONDS pass
  local name=$1 limit=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  fail "$name did not answer on 127.0.0.1 within ${limit} s (checked with: $*)"
}
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
maria_up() { mysqladmin -h 127.0.0.1 -u root ping; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ]; }

command -v pg_isready >/dev/null || fail "PostgreSQL is not installed (pg_isready missing)"
if ! pg_up; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || fail "could not start PostgreSQL"
fi
[ -x /usr/sbin/mariadbd ] || fail "MariaDB is not installed (/usr/sbin/mariadbd missing)"
if ! maria_up >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || fail "could not start MariaDB"
fi
command -v redis-server >/dev/null || fail "Redis is not installed (redis-server missing)"
if ! redis_up; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis \
    --logfile /var/log/redis/ci.log || fail "could not start Redis"
fi
wait_for PostgreSQL "$WAIT_S" pg_up
wait_for MariaDB "$WAIT_S" maria_up  # mariadbd starts in the background: allow it time to open its socket
wait_for Redis "$WAIT_S" redis_up
echo "ci: PostgreSQL, MariaDB and Redis answer"
