#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or this one: installs Redis, PostgreSQL and
# Python with apt-get when they are missing (schemathesis goes into a reusable venv), starts
# the services when they are not running, then runs every test (schemathesis against the API's
# OpenAPI document, unit tests, the API tests against embedded SQLite, Redis + SQLite and
# Redis + PostgreSQL, and the Python client's tests against the real server binary).
#
#   scripts/test.sh [extra cargo test args]
#
# TEST_REDIS_URL and TEST_DATABASE_URL point the tests elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

wait_for() { # wait_for <what> <command...>
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up" >&2; return 1
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "== starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/flowstate-tests.log
  wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "== starting postgresql"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for postgresql pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! psql "$TEST_DATABASE_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  # A fresh install authenticates TCP clients by password: give postgres one, create `test`.
  echo "== preparing postgresql user and database for the tests"
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  su postgres -c "createdb test" 2>/dev/null || true
  psql "$TEST_DATABASE_URL" -qtAc 'SELECT 1' >/dev/null
fi

# Leftovers of earlier runs: one schema per PostgreSQL test, one key prefix per Redis test.
# One transaction per schema: dropping hundreds at once runs out of lock slots.
psql "$TEST_DATABASE_URL" -qtA >/dev/null <<'SQL'
SET client_min_messages = warning;
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
    COMMIT;
  END LOOP;
END $$;
SQL
redis-cli -u "$TEST_REDIS_URL" --scan --pattern 'test:*' | xargs -r -n 500 redis-cli -u "$TEST_REDIS_URL" unlink >/dev/null

# The API against its own OpenAPI document (embedded server, bounded time).
scripts/schemathesis.sh "${SCHEMATHESIS_SECONDS:-90}"

echo "== cargo test"
cargo test --workspace "$@"

echo "== python client"
TEST_REDIS_PG=1 scripts/python-client.sh
