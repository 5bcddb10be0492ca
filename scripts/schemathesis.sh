#!/usr/bin/env bash
# Checks the API against its own contract: starts an embedded server (fresh SQLite, in-process
# hot tier) on a free port and runs schemathesis (PyPI) against its /openapi.json for a bounded
# time with the checks not_a_server_error (no 5xx) and response_schema_conformance (every
# response matches its documented schema). Any finding fails the run. Lock and agent-cache waits
# are capped at 2 s there: a fuzzed wait_ms on a held lock or lease would otherwise outlast the
# 10 s request timeout.
#
#   scripts/schemathesis.sh [seconds, default 90]
#
# schemathesis is installed once per machine into a venv (SCHEMATHESIS_VENV, default
# ~/.cache/flowstate-tools/venv) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_TIME="${1:-90}"
VENV="${SCHEMATHESIS_VENV:-$HOME/.cache/flowstate-tools/venv}"
ST_VERSION="schemathesis>=4.32,<5"

if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  echo "== installing schemathesis into $VENV"
  python3 -m venv "$VENV" || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install -q "$ST_VERSION"
fi

cargo build -q --bin flowstate
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
env -u REDIS_URL -u DATABASE_URL -u FLOWSTATE_CONFIG \
  DATABASE_URL="sqlite://$tmp/flowstate.db" FLOWSTATE_LISTEN="127.0.0.1:$port" RUST_LOG=error \
  FLOWSTATE_LOCKS__MAX_WAIT_MS=2000 FLOWSTATE_AGENT_CACHE__MAX_WAIT_MS=2000 \
  target/debug/flowstate serve >"$tmp/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("the server did not become ready")
PY

echo "== schemathesis against http://127.0.0.1:$port/openapi.json (${MAX_TIME}s)"
# One worker: with two, hypothesis's lambda-source inspection raced in CPython 3.11's ast
# ("AST constructor recursion depth mismatch", a schemathesis error, not a finding). Run from
# the temp dir, where schemathesis keeps its cache.
cd "$tmp"
"$VENV/bin/schemathesis" --no-color run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --max-time "$MAX_TIME" --workers 1 --request-timeout 10 \
  --suppress-health-check too_slow --generation-database none
