#!/usr/bin/env bash
# The Python client's checks: ruff, mypy --strict, then pytest against the real server binary
# (embedded, and Redis + PostgreSQL when TEST_REDIS_PG=1). Its tools go into a venv made once
# per machine and reused (PYCLIENT_VENV, default ~/.cache/flowstate-tools/py; CrewAI alone is
# ~1 GB and 1.5 min to install); the client itself is installed from the checkout
# (`pip install ./clients/python`), without network, on every run. CrewAI runs with telemetry
# and tracing off: the tests have no network.
#
#   scripts/python-client.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CREWAI_DISABLE_TELEMETRY=true OTEL_SDK_DISABLED=true CREWAI_TRACING_ENABLED=false

VENV="${PYCLIENT_VENV:-$HOME/.cache/flowstate-tools/py}"
TOOLS=(hatchling "httpx>=0.27,<1" "httpx-sse>=0.4,<1" "typing_extensions>=4.6" pytest ruff mypy
  "langgraph>=1.0" "langgraph-checkpoint>=4.0,<5" "langgraph-checkpoint-conformance==0.0.2"
  "crewai>=1.15,<2")
if ! "$VENV/bin/python" -c "import hatchling, httpx, httpx_sse, pytest, mypy, langgraph.checkpoint.conformance, crewai.flow" 2>/dev/null \
  || ! [ -x "$VENV/bin/ruff" ]; then
  echo "== installing the Python client's tools into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${TOOLS[@]}"
fi
"$VENV/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall ./clients/python

cargo build -q --bin flowstate
export TEST_FLOWSTATE_BIN="$PWD/target/debug/flowstate"

cd clients/python
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
"$VENV/bin/pytest" -q "$@"
