#!/usr/bin/env bash
# The sampler table (docs/diffusion.md, "Sampler table"): DDPM 1000 / DDIM 250 / 50 / 20 / 10 and
# DDPM 50 / 20 / 10, guidance off / 1.5 / 4, scored by classifier-feature FID and class accuracy.
#
#   crates/diffusion-train/scripts/sampler_table.sh [GUIDED_DDPM_SAMPLES]
#
# Env: CKPT (default out/diffusion-20k/cpu-tiny.safetensors), CL (the evaluation classifier,
# default out/diffusion/classifier.safetensors; trained when missing), OUT (default
# out/sampler-table), FERRITE (default target/release/ferrite), N (samples per row, 10000).
# Guided DDPM 1000 rows use GUIDED_DDPM_SAMPLES (default N; ~116 min per row on one core at 10 000).
# Two workers, one per core (--threads 1). Each row keeps its finished batches in
# $OUT/shards/<row> and its JSON in $OUT/rows/<row>.json, so a rerun skips finished rows and
# resumes unfinished ones; finished rows are also appended to $OUT/table.txt (tag, UTC span, JSON).
# ONLY="tag tag ..." runs just those rows, e.g. the two guided DDPM 1000 rows at full size:
#   ONLY="ddpm1000-g1.5 ddpm1000-g4" crates/diffusion-train/scripts/sampler_table.sh
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

# row SAMPLER STEPS GUIDANCE SAMPLES: one cell, tagged SAMPLERSTEPS[-gGUIDANCE][-nSAMPLES]
# (guidance 1 = off; the -n suffix only when SAMPLES is not N).
row() {
  local sampler=$1 steps=$2 scale=$3 n=$4
  local tag="$sampler$steps"
  [ "$scale" = 1 ] || tag="$tag-g$scale"
  [ "$n" = "$N" ] || tag="$tag-n$n"
  local json="$OUT/rows/$tag.json"
  [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $tag "* ]] && return 0
  [ -s "$json" ] && return 0
  local start; start=$(date -u +%H:%M:%S)
  if "$FERRITE" --threads 1 diffusion eval --checkpoint "$CKPT" --classifier "$CL" --seed 0 \
      --baseline --json --quiet --samples "$n" --shards "$OUT/shards/$tag" \
      --sampler "$sampler" --steps "$steps" --guidance-scale "$scale" > "$json.tmp"; then
    echo "$tag $start-$(date -u +%H:%M:%S) $(tr -d '\n' < "$json.tmp")" >> "$OUT/table.txt"
    mv "$json.tmp" "$json"
  else
    echo "sampler_table: row $tag failed" >&2; rm -f "$json.tmp"; return 1
  fi
}

# Balanced by forwards per image (guidance doubles them): ~1760 per worker at n = 10 000.
worker_a() {
  row ddim 10 1.5 "$N"; row ddim 20 1.5 "$N"; row ddim 50 1 "$N"; row ddpm 50 1 "$N"
  row ddim 50 1.5 "$N"; row ddpm 1000 1 "$N"; row ddim 250 1.5 "$N"
  row ddpm 1000 1.5 "$GUIDED_DDPM_SAMPLES"
}
worker_b() {
  row ddim 10 1 "$N"; row ddpm 10 1 "$N"; row ddim 20 1 "$N"; row ddpm 20 1 "$N"
  row ddim 10 4 "$N"; row ddim 20 4 "$N"; row ddim 50 4 "$N"; row ddim 250 1 "$N"
  row ddim 250 4 "$N"
  row ddpm 1000 4 "$GUIDED_DDPM_SAMPLES"
}
# With guided DDPM 1000 subsampled, a few full-size cells again at its n (the docs' "same row
# at n = 2000" column), to show how far FID moves with n.
same_n_a() { row ddpm 1000 1 "$GUIDED_DDPM_SAMPLES"; }
same_n_b() { row ddim 50 1.5 "$GUIDED_DDPM_SAMPLES"; row ddim 50 4 "$GUIDED_DDPM_SAMPLES"; row ddim 20 1 "$GUIDED_DDPM_SAMPLES"; }

# both_cores F G: F and G in parallel, failing when either fails.
both_cores() {
  "$1" & local a=$!
  "$2" & local b=$!
  local status=0
  wait "$a" || status=1
  wait "$b" || status=1
  return "$status"
}
both_cores worker_a worker_b
[ "$GUIDED_DDPM_SAMPLES" = "$N" ] || both_cores same_n_a same_n_b
echo "sampler_table: done; rows in $OUT/table.txt"
