#!/usr/bin/env bash
# The sampler table (docs/diffusion.md, "Sampler table"): DDPM 1000 / DDIM 250 / 50 / 20 / 10 and
# DDPM 50 / 20 / 10, guidance off / 1.5 / 4, scored by classifier-feature FID and class accuracy.
#
#   crates/diffusion-train/scripts/sampler_table.sh [GUIDED_DDPM_SAMPLES]
#
# Env: CKPT (default out/diffusion-20k/cpu-tiny.safetensors), CL (the evaluation classifier,
# default out/diffusion/classifier.safetensors; trained when missing), OUT (default
# out/sampler-table), FERRITE (default target/release/ferrite), N (samples per row, 10000).
# Guided DDPM 1000 rows use GUIDED_DDPM_SAMPLES (default N; ~60 min per row on two cores at 10 000).
# Two workers, one per core (--threads 1). Each row keeps its finished batches in
# $OUT/shards/<row> and its JSON in $OUT/rows/<row>.json, so a rerun skips finished rows and
# resumes unfinished ones; finished rows are also appended to $OUT/table.txt (tag, UTC span, JSON).
# ONLY="tag tag ..." runs just those rows, e.g. the two guided DDPM 1000 rows at full size:
#   ONLY="ddpm1000-g1.5-n10000 ddpm1000-g4-n10000" crates/diffusion-train/scripts/sampler_table.sh
set -euo pipefail
CKPT=${CKPT:-out/diffusion-20k/cpu-tiny.safetensors}
CL=${CL:-out/diffusion/classifier.safetensors}
OUT=${OUT:-out/sampler-table}
FERRITE=${FERRITE:-target/release/ferrite}
N=${N:-10000}
GUIDED_DDPM_SAMPLES=${1:-$N}
[ -f "$CKPT" ] || { echo "sampler_table: no checkpoint $CKPT (train it first: ferrite --threads 2 diffusion train --checkpoint $CKPT)" >&2; exit 1; }
mkdir -p "$OUT/rows" "$OUT/shards"
[ -f "$CL" ] || "$FERRITE" --threads 1 diffusion classifier --classifier "$CL" --json

row() { # row TAG SAMPLES FLAGS...
  local tag=$1 n=$2; shift 2
  local json="$OUT/rows/$tag.json"
  [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $tag "* ]] && return 0
  [ -s "$json" ] && return 0
  local start; start=$(date -u +%H:%M:%S)
  if "$FERRITE" --threads 1 diffusion eval --checkpoint "$CKPT" --classifier "$CL" --seed 0 \
      --baseline --json --quiet --samples "$n" --shards "$OUT/shards/$tag" "$@" > "$json.tmp"; then
    echo "$tag $start-$(date -u +%H:%M:%S) $(tr -d '\n' < "$json.tmp")" >> "$OUT/table.txt"
    mv "$json.tmp" "$json"
  else
    echo "sampler_table: row $tag failed" >&2; rm -f "$json.tmp"; return 1
  fi
}

# Balanced by forwards per image (guidance doubles them): ~1760 per worker at n = 10 000.
worker_a() {
  row ddim10-g1.5 "$N" --sampler ddim --steps 10 --guidance-scale 1.5
  row ddim20-g1.5 "$N" --sampler ddim --steps 20 --guidance-scale 1.5
  row ddim50 "$N" --sampler ddim --steps 50
  row ddpm50 "$N" --sampler ddpm --steps 50
  row ddim50-g1.5 "$N" --sampler ddim --steps 50 --guidance-scale 1.5
  row ddpm1000 "$N" --sampler ddpm --steps 1000
  row ddim250-g1.5 "$N" --sampler ddim --steps 250 --guidance-scale 1.5
  row "ddpm1000-g1.5-n$GUIDED_DDPM_SAMPLES" "$GUIDED_DDPM_SAMPLES" --sampler ddpm --steps 1000 --guidance-scale 1.5
}
worker_b() {
  row ddim10 "$N" --sampler ddim --steps 10
  row ddpm10 "$N" --sampler ddpm --steps 10
  row ddim20 "$N" --sampler ddim --steps 20
  row ddpm20 "$N" --sampler ddpm --steps 20
  row ddim10-g4 "$N" --sampler ddim --steps 10 --guidance-scale 4
  row ddim20-g4 "$N" --sampler ddim --steps 20 --guidance-scale 4
  row ddim50-g4 "$N" --sampler ddim --steps 50 --guidance-scale 4
  row ddim250 "$N" --sampler ddim --steps 250
  row ddim250-g4 "$N" --sampler ddim --steps 250 --guidance-scale 4
  row "ddpm1000-g4-n$GUIDED_DDPM_SAMPLES" "$GUIDED_DDPM_SAMPLES" --sampler ddpm --steps 1000 --guidance-scale 4
}
worker_a & a=$!
worker_b & b=$!
wait $a && wait $b
echo "sampler_table: done; rows in $OUT/table.txt"
