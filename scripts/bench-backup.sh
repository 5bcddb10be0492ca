#!/usr/bin/env bash
# Backs up and restores N keys (default 100,000) of every type the key layout holds, on a
# private Redis with a SQLite ledger, through the release binary's `flowstate backup` CLI, and
# prints the time of each and the server's peak resident memory (VmHWM) after each.
#
#   scripts/bench-backup.sh [keys]
#
# The keys: 40 % strings of ~400 B (cache:flow:state:*), 20 % hashes of 8 fields
# (orchestrator:*), 20 % streams of 5 entries (flow:events:*), 10 % sorted sets of 10 members
# and 10 % lists of 10 items (agent:results:*), all under the default backup patterns.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
PORT=6391
HTTP_PORT=18091
cargo build --release -q --bin flowstate
BIN=target/release/flowstate
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" >/dev/null
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1; kill ${SERVER_PID:-} 2>/dev/null; rm -rf $DIR' EXIT

echo "== filling $N keys"
awk -v n="$N" 'BEGIN {
  v = sprintf("%400s", ""); gsub(/ /, "v", v)
  for (i = 0; i < n; i++) {
    k = i % 10
    if (k < 4) print "SET cache:flow:state:" i " " v " EX 86400"
    else if (k < 6) print "HSET orchestrator:h:" i " a 1 b 2 c 3 d 4 e 5 f 6 g 7 h " v
    else if (k < 8) for (j = 1; j <= 5; j++) print "XADD flow:events:" i " * type t" j " data " v
    else if (k < 9) print "ZADD agent:results:z:" i " 1 a 2 b 3 c 4 d 5 e 6 f 7 g 8 h 9 i 10 j"
    else print "RPUSH agent:results:l:" i " a b c d e f g h i " v
  }
}' | redis-cli -p "$PORT" --pipe | tail -n 1
redis-cli -p "$PORT" info memory | grep '^used_memory_human'
redis-cli -p "$PORT" dbsize

DATABASE_URL="sqlite://$DIR/flowstate.db" REDIS_URL="redis://127.0.0.1:$PORT/0" \
  FLOWSTATE_LISTEN="127.0.0.1:$HTTP_PORT" FLOWSTATE_BACKUP__INTERVAL_H=0 RUST_LOG=warn \
  "$BIN" serve &
SERVER_PID=$!
until curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null; do sleep 0.1; done
rss() { awk -v what="$1" '/^VmRSS|^VmHWM/ {printf "%s %s %.1f MB  ", what, $1, $2 / 1024} END {print ""}' "/proc/$SERVER_PID/status"; }
rss idle
URL="http://127.0.0.1:$HTTP_PORT"
start=$(date +%s.%N)
"$BIN" backup create --url "$URL" --json > "$DIR/made.json"
end=$(date +%s.%N)
echo "backup: $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f s", b - a}'), $(cat "$DIR/made.json")"
rss "after backup"
ID=$(grep -o '"backup_id": *"[^"]*"' "$DIR/made.json" | cut -d'"' -f4)
redis-cli -p "$PORT" flushall >/dev/null
start=$(date +%s.%N)
"$BIN" backup restore "$ID" --url "$URL" --json > "$DIR/restored.json"
end=$(date +%s.%N)
echo "restore: $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f s", b - a}'), $(cat "$DIR/restored.json")"
rss "after restore"
redis-cli -p "$PORT" dbsize
