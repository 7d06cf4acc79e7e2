#!/usr/bin/env bash
# Soak: `ferrite serve` with sink caches under clients that connect and disconnect for
# DURATION seconds (default 1800 = 30 min); RSS sampled every 5 s; then SIGTERM and a check
# that the server stops cleanly. Developer machine only (long); never CI.
#
#   bash bench/peer_server_soak.sh [DURATION_S] [MODEL] [CLIENTS]
# THREADS (2) and PARALLEL (2) set the server's threads and workers.
set -euo pipefail
DURATION=${1:-1800}
MODEL=${2:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CLIENTS=${3:-6}
THREADS=${THREADS:-2}
PARALLEL=${PARALLEL:-2}
FERRITE=${FERRITE:-target/release/ferrite}
PORT=18090

"$FERRITE" --threads "$THREADS" serve --model "$MODEL" --port $PORT --kv sink:4+508 --parallel "$PARALLEL" \
  --queue 4 --max-sessions 8 --shutdown-grace 5 2>/tmp/ferrite_soak_server.log &
PID=$!
for _ in $(seq 1 300); do
  curl -sf http://127.0.0.1:$PORT/health >/dev/null 2>&1 && break
  sleep 0.2
done
rc=0
python3 bench/peer_server_soak.py --url http://127.0.0.1:$PORT --pid $PID \
  --duration "$DURATION" --clients "$CLIENTS" || rc=$?
kill -TERM $PID
if wait $PID; then echo "server stopped cleanly on SIGTERM"; else echo "server exit code $?"; rc=1; fi
tail -3 /tmp/ferrite_soak_server.log
exit $rc
