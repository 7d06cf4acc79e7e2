#!/usr/bin/env bash
# Side-by-side serving benchmark: ferrite serve vs llama-cpp-python's server on the same GGUF
# and threads, at 1, 4 and 16 concurrent streams (bench/peer_server_bench.py measures both).
# Developer machine only (needs the peers venv with llama-cpp-python[server]); never CI.
#
#   bash bench/peer_server.sh [MODEL] [THREADS] [MAX_TOKENS] [LEVELS]
set -euo pipefail
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${2:-2}
MAX_TOKENS=${3:-32}
LEVELS=${4:-1,4,16}
VENV=${PEERS_VENV:-$HOME/.cache/ferrite-peers}
PY=$VENV/bin/python
FERRITE=${FERRITE:-target/release/ferrite}
PORT_F=18080
PORT_L=18081

wait_up() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server on port $1 never came up" >&2
  return 1
}

echo "| server | streams | ok | TTFT median (s) | TTFT max (s) | tok/s per stream | aggregate tok/s |"
echo "|---|---|---|---|---|---|---|"

"$FERRITE" --threads "$THREADS" serve --model "$MODEL" --port $PORT_F --parallel 1 --queue 64 \
  --model-name smollm2 2>/tmp/ferrite_serve_bench.log &
FPID=$!
wait_up $PORT_F /health
python3 bench/peer_server_bench.py --url http://127.0.0.1:$PORT_F --model smollm2 \
  --levels "$LEVELS" --max-tokens "$MAX_TOKENS" --label "ferrite (parallel 1)" | grep '^|'
kill -TERM $FPID; wait $FPID || true

"$PY" -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port $PORT_L \
  --n_threads "$THREADS" --n_ctx 2048 --verbose false 2>/tmp/llamacpp_serve_bench.log &
LPID=$!
wait_up $PORT_L /v1/models
python3 bench/peer_server_bench.py --url http://127.0.0.1:$PORT_L --model smollm2 \
  --levels "$LEVELS" --max-tokens "$MAX_TOKENS" --label "llama-cpp-python server" | grep '^|'
kill -TERM $LPID; wait $LPID || true
