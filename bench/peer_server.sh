#!/usr/bin/env bash
# Side-by-side serving benchmark: ferrite serve vs llama-cpp-python's server on the same GGUF
# and threads, at 1, 4 and 16 concurrent streams. Both servers run at once (idle while the other
# is measured); bench/peer_server_bench.py alternates them level by level and round by round so
# they see the same machine load, and prints medians and ferrite/llama.cpp ratios.
# Developer machine only (needs the peers venv with llama-cpp-python[server]); never CI.
#
#   bash bench/peer_server.sh [MODEL] [THREADS] [MAX_TOKENS] [LEVELS] [ROUNDS]
set -euo pipefail
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${2:-2}
MAX_TOKENS=${3:-32}
LEVELS=${4:-1,4,16}
ROUNDS=${5:-1}
VENV=${PEERS_VENV:-$HOME/.cache/ferrite-peers}
PY=$VENV/bin/python
FERRITE=${FERRITE:-target/release/ferrite}
PORT_F=18080
PORT_L=18081

wait_up() {
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server on port $1 never came up" >&2
  return 1
}

"$FERRITE" --threads "$THREADS" serve --model "$MODEL" --port $PORT_F --parallel 1 --queue 64 \
  --model-name smollm2 2>/tmp/ferrite_serve_bench.log &
FPID=$!
"$PY" -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port $PORT_L \
  --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx 2048 --verbose false \
  --interrupt_requests false \
  2>/tmp/llamacpp_serve_bench.log &
LPID=$!
trap 'kill -TERM $FPID $LPID 2>/dev/null || true' EXIT
wait_up $PORT_F /health
wait_up $PORT_L /v1/models
python3 bench/peer_server_bench.py --model smollm2 --levels "$LEVELS" --max-tokens "$MAX_TOKENS" \
  --rounds "$ROUNDS" --url http://127.0.0.1:$PORT_F --label "ferrite" \
  --url http://127.0.0.1:$PORT_L --label "llama-cpp-python"
