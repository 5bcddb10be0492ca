#!/usr/bin/env bash
# Benchmarks flowstate on its three configurations beside the reference design's own Python hot
# paths, all against one private Redis, in one run, so the figures can be read as ratios.
#
#   scripts/bench.sh [seconds-per-level] [concurrency list]
#
# Needs: redis-server, PostgreSQL on 127.0.0.1:5432 (scripts/test.sh sets both up), python3.
# Output: target/bench/<timestamp>/{reference.txt,flowstate.txt}
set -euo pipefail
# Ten thousand SSE subscribers need as many descriptors in the server and in the load generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cd "$(dirname "$0")/.."
SECONDS_PER_LEVEL="${1:-5}"
CONC="${2:-1,16,64}"
PORT=6390
HTTP_PORT=18090
PG_ADMIN="${BENCH_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
OUT="target/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

cargo build --release -q
BIN=target/release/flowstate

if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  echo "port $PORT is taken by another redis; stop it first" >&2; exit 1
fi
start_redis() {
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "/tmp/flowstate-bench-redis-$PORT.pid" >/dev/null
  until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
}
start_redis
trap 'kill -CONT $(cat /tmp/flowstate-bench-redis-$PORT.pid) 2>/dev/null; redis-cli -p $PORT shutdown nosave >/dev/null 2>&1; kill ${SERVER_PID:-} 2>/dev/null || true' EXIT

# --- the reference design, measured by its own driver -----------------------------------------
# The reference design's bench folder (its seed_baseline.py), when a copy is at hand.
REF="${REFERENCE_BENCH_DIR:-../shared/bench}"
if [ -f "$REF/seed_baseline.py" ]; then
  rm -rf /tmp/flowstate-seedbench && cp -r "$REF" /tmp/flowstate-seedbench
  python3 -m venv /tmp/flowstate-seedbench/.venv
  /tmp/flowstate-seedbench/.venv/bin/pip install -q redis
  /tmp/flowstate-seedbench/.venv/bin/python /tmp/flowstate-seedbench/seed_baseline.py \
    --port "$PORT" --conc "$CONC" --seconds 3 \
    --ops register_flow_child,transition_state,save_phase_state,get_cached_result,get_cached_result_70,cache_agent_result,acquire_flow_lock 2>&1 | tee "$OUT/reference.txt"
  cp "/tmp/flowstate-bench-redis-$PORT.pid" "/tmp/flowstate-seedbench/redis-$PORT.pid"
  (cd /tmp/flowstate-seedbench && ./bench_limits.sh "$PORT") 2>/dev/null | tail -n 20 > "$OUT/redis-benchmark.txt" || true
else
  echo "(no reference bench at $REF: reference figures skipped; set REFERENCE_BENCH_DIR)"
fi

# The physical limit of one round trip per operation: GET on the same Redis, 16 clients.
redis-benchmark -p "$PORT" -t get -c 16 -P 1 -n 200000 -d 2048 -q 2>/dev/null | tee "$OUT/redis-benchmark-get.txt"

# --- flowstate ----------------------------------------------------------------------------------
run_config() { # name, env...
  local name=$1; shift
  echo "== $name" | tee -a "$OUT/flowstate.txt"
  redis-cli -p "$PORT" flushall >/dev/null
  env "$@" FLOWSTATE_LISTEN="127.0.0.1:$HTTP_PORT" RUST_LOG=warn "$BIN" serve &
  SERVER_PID=$!
  until curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null; do sleep 0.1; done
  local redis_arg=()
  [[ " $* " == *" REDIS_URL="* ]] && redis_arg=(--redis-url "redis://127.0.0.1:$PORT/0")
  for scenario in register transition get-flow phase-save phase-get state-get cache-hit cache-mix cache-set lock; do
    "$BIN" bench --url "http://127.0.0.1:$HTTP_PORT" --scenario "$scenario" \
      --concurrency "$CONC" --seconds "$SECONDS_PER_LEVEL" "${redis_arg[@]}" | tee -a "$OUT/flowstate.txt"
  done
  if [ "${FANOUT:-}" = 1 ]; then
    echo "-- fan-out: one flow's events to N SSE subscribers" | tee -a "$OUT/flowstate.txt"
    "$BIN" bench-fanout --url "http://127.0.0.1:$HTTP_PORT" --subscribers 1000,10000 \
      --events 50 --interval-ms 100 --server-pid "$SERVER_PID" | tee -a "$OUT/flowstate.txt"
  fi
  if [ "${DEGRADED:-}" = 1 ]; then
    local pid; pid=$(cat "/tmp/flowstate-bench-redis-$PORT.pid")
    echo "-- degraded: redis hung (SIGSTOP)" | tee -a "$OUT/flowstate.txt"
    kill -STOP "$pid"
    for scenario in state-get get-flow; do
      "$BIN" bench --url "http://127.0.0.1:$HTTP_PORT" --scenario "$scenario" \
        --concurrency "$CONC" --seconds "$SECONDS_PER_LEVEL" | tee -a "$OUT/flowstate.txt"
    done
    kill -CONT "$pid"
    echo "-- degraded: redis down (connection refused)" | tee -a "$OUT/flowstate.txt"
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    for scenario in state-get get-flow; do
      "$BIN" bench --url "http://127.0.0.1:$HTTP_PORT" --scenario "$scenario" \
        --concurrency "$CONC" --seconds "$SECONDS_PER_LEVEL" | tee -a "$OUT/flowstate.txt"
    done
    start_redis
    curl -s "http://127.0.0.1:$HTTP_PORT/v1/fallbacks?limit=5" | tee -a "$OUT/flowstate.txt"; echo | tee -a "$OUT/flowstate.txt"
  fi
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  # The same configuration through the library, in this process: the like-for-like figure
  # beside the reference's driver, which calls its Python functions directly.
  echo "-- in process (library, no HTTP)" | tee -a "$OUT/flowstate.txt"
  redis-cli -p "$PORT" flushall >/dev/null
  for scenario in register transition phase-save get-flow state-get cache-hit cache-mix cache-set lock; do
    env "$@" RUST_LOG=warn "$BIN" bench --in-process --scenario "$scenario" \
      --concurrency "$CONC" --seconds "$SECONDS_PER_LEVEL" "${redis_arg[@]}" | tee -a "$OUT/flowstate.txt"
  done
}

DB=$(mktemp -d)
FANOUT=1 run_config embedded DATABASE_URL="sqlite://$DB/flowstate.db"
rm -rf "$DB"; DB=$(mktemp -d)
FANOUT=1 DEGRADED=1 run_config redis+sqlite DATABASE_URL="sqlite://$DB/flowstate.db" REDIS_URL="redis://127.0.0.1:$PORT/0"
rm -rf "$DB"
psql "$PG_ADMIN" -qc 'DROP SCHEMA IF EXISTS flowstate_bench CASCADE' -c 'CREATE SCHEMA flowstate_bench'
run_config redis+postgres \
  DATABASE_URL="${PG_ADMIN}?options=-c%20search_path%3Dflowstate_bench" REDIS_URL="redis://127.0.0.1:$PORT/0"
psql "$PG_ADMIN" -qc 'DROP SCHEMA IF EXISTS flowstate_bench CASCADE'

echo "results in $OUT"
