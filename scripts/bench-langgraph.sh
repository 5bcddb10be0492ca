#!/usr/bin/env bash
# LangGraph steps per second through flowstate's FlowstateSaver (embedded, Redis + SQLite and
# Redis + PostgreSQL), beside langgraph-checkpoint-sqlite, -postgres (same PostgreSQL) and
# -redis on the same graph, in one run (clients/python/bench/langgraph_steps.py). Uses the Python client's venv
# (scripts/python-client.sh makes it) and adds the two savers to it when missing.
#
#   scripts/bench-langgraph.sh [seconds-per-mode]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_MODE="${1:-5}"
VENV="${PYCLIENT_VENV:-$HOME/.cache/flowstate-tools/py}"
PY="$VENV/bin/python"
PG_ADMIN="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
PORT=6392
HTTP_PORT=18092
"$PY" -c "import langgraph.checkpoint.sqlite, langgraph.checkpoint.redis, langgraph.checkpoint.postgres, aiosqlite, psycopg" 2>/dev/null \
  || "$VENV/bin/pip" install -q langgraph-checkpoint-sqlite langgraph-checkpoint-redis \
    langgraph-checkpoint-postgres aiosqlite "psycopg[binary]"
"$VENV/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall ./clients/python
cargo build --release -q --bin flowstate
BIN=target/release/flowstate
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" >/dev/null
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1; kill ${SERVER_PID:-} 2>/dev/null; rm -rf $DIR' EXIT
BENCH=clients/python/bench/langgraph_steps.py

serve() { # env...
  env "$@" FLOWSTATE_LISTEN="127.0.0.1:$HTTP_PORT" RUST_LOG=warn "$BIN" serve &
  SERVER_PID=$!
  until curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null; do sleep 0.1; done
}
stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }

serve DATABASE_URL="sqlite://$DIR/embedded.db"
echo "flowstate embedded: $("$PY" $BENCH flowstate "http://127.0.0.1:$HTTP_PORT" "$SECONDS_PER_MODE")"
stop
serve DATABASE_URL="sqlite://$DIR/redis.db" REDIS_URL="redis://127.0.0.1:$PORT/0"
echo "flowstate redis+sqlite: $("$PY" $BENCH flowstate "http://127.0.0.1:$HTTP_PORT" "$SECONDS_PER_MODE")"
stop
psql "$PG_ADMIN" -qc 'DROP SCHEMA IF EXISTS flowstate_lgbench CASCADE' -c 'CREATE SCHEMA flowstate_lgbench'
serve DATABASE_URL="${PG_ADMIN}?options=-c%20search_path%3Dflowstate_lgbench" REDIS_URL="redis://127.0.0.1:$PORT/0"
echo "flowstate redis+postgres: $("$PY" $BENCH flowstate "http://127.0.0.1:$HTTP_PORT" "$SECONDS_PER_MODE")"
stop
psql "$PG_ADMIN" -qc 'DROP SCHEMA IF EXISTS flowstate_lgbench CASCADE' -c 'CREATE SCHEMA flowstate_lgbench'
echo "langgraph-checkpoint-postgres: $("$PY" $BENCH postgres "${PG_ADMIN/postgres:/postgresql:}?options=-csearch_path%3Dflowstate_lgbench" "$SECONDS_PER_MODE")"
psql "$PG_ADMIN" -qc 'DROP SCHEMA IF EXISTS flowstate_lgbench CASCADE'
echo "langgraph-checkpoint-sqlite: $("$PY" $BENCH sqlite "$DIR/lg.sqlite" "$SECONDS_PER_MODE")"
echo "langgraph-checkpoint-redis: $("$PY" $BENCH redis "redis://127.0.0.1:$PORT/1" "$SECONDS_PER_MODE")"
