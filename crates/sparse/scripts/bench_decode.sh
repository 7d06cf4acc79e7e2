#!/usr/bin/env bash
# Side-by-side decode/prompt throughput and peak RSS: dense f32 vs sparse (bitmap from file,
# bitmap converted at load, 2:4 from file) vs the Q4_1 GGUF, at 1 and 2 threads, interleaved
# over ROUNDS rounds so machine load hits every configuration alike.
# usage: crates/sparse/scripts/bench_decode.sh PRUNED_DIR_ROOT [ROUNDS] > results.jsonl
set -euo pipefail
S=${1:?usage: bench_decode.sh PRUNED_DIR_ROOT [ROUNDS]}
ROUNDS=${2:-2}
F=${FERRITE:-target/release/ferrite}
ARGS="--prompt-tokens 64 --gen-tokens 32 --repeat 3 --json"
for round in $(seq "$ROUNDS"); do
  for t in 1 2; do
    for cfg in "dense-f32 $S/smollm2-mag50 f32" \
               "sparse50-file $S/smollm2-mag50-sparse quant" \
               "sparse50-at-load $S/smollm2-mag50 sparse" \
               "sparse2of4-file $S/smollm2-mag-2of4-sparse quant" \
               "q4_1 models/SmolLM2-135M-Instruct.Q4_1.gguf quant"; do
      set -- $cfg
      $F bench --threads "$t" -m "$2" --dtype "$3" $ARGS \
        | python3 -c "import json,sys; d=json.load(sys.stdin); d['config']='$1'; d['round']=$round; print(json.dumps(d))"
    done
  done
done
