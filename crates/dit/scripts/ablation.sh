#!/usr/bin/env bash
# DiT conditioning ablation (paper §3.2 / Figure 5) on the CPU recipe: the four block designs
# trained with the same budget (steps, batch, seed), checkpoints kept every SEG steps, then each
# checkpoint scored by classifier-feature FID; `ablation_report` draws the curve and the table.
#
# usage: crates/dit/scripts/ablation.sh [train|eval|report|all] [SEG] [SEGMENTS] [SAMPLES]
#   defaults: all 150 4 200  (600 steps of batch 32 per design; FID of 200 DDIM-10 samples)
# env: OUT (out/dit-ablation), THREADS (1), CLASSIFIER (out/diffusion/classifier.safetensors),
#      DESIGNS (all four; a subset lets two processes share the designs)
set -euo pipefail
PHASE=${1:-all}; SEG=${2:-150}; N=${3:-4}; SAMPLES=${4:-200}
OUT=${OUT:-out/dit-ablation}; THREADS=${THREADS:-1}
CLASSIFIER=${CLASSIFIER:-out/diffusion/classifier.safetensors}
BIN=${BIN:-target/release/ferrite}
DESIGNS=${DESIGNS:-"in-context cross-attention adaln adaln-zero"}
mkdir -p "$OUT"

train() {
  for design in $DESIGNS; do
    ck="$OUT/$design.safetensors"
    for i in $(seq 1 "$N"); do
      steps=$((SEG * i))
      [ -f "$OUT/$design.step$steps.safetensors" ] && continue
      resume=(); [ -f "$ck" ] && resume=(--resume)
      /usr/bin/time -f "%e %U %S" -o "$OUT/$design.step$steps.time" \
        nice -n 10 "$BIN" diffusion train --threads "$THREADS" --conditioning "$design" \
        --steps "$steps" --seed 0 --checkpoint "$ck" --checkpoint-every "$SEG" "${resume[@]}" \
        --quiet --json > "$OUT/$design.train.step$steps.json"
      cp "$ck" "$OUT/$design.step$steps.safetensors"
    done
  done
}

evaluate() {
  [ -f "$CLASSIFIER" ] || { echo "no classifier at $CLASSIFIER (ferrite diffusion classifier)"; exit 1; }
  for design in $DESIGNS; do
    for i in $(seq 1 "$N"); do
      steps=$((SEG * i))
      [ -f "$OUT/$design.eval.step$steps.json" ] && continue
      floor=(); [ "$i" -eq "$N" ] && floor=(--baseline)  # real-image FID at the same n, once per design
      /usr/bin/time -f "%e %U %S" -o "$OUT/$design.eval.step$steps.time" \
        nice -n 10 "$BIN" diffusion eval --threads "$THREADS" --checkpoint "$OUT/$design.step$steps.safetensors" \
        --classifier "$CLASSIFIER" --sampler ddim --steps 10 --samples "$SAMPLES" --seed 0 \
        --grid "$OUT/$design.step$steps.grid.png" "${floor[@]}" --quiet --json > "$OUT/$design.eval.step$steps.json.tmp"
      mv "$OUT/$design.eval.step$steps.json.tmp" "$OUT/$design.eval.step$steps.json"
    done
  done
}

report() {
  cargo run --release -q -p ferrite-dit --example ablation_report -- "$OUT" "$SEG" "$N"
}

case "$PHASE" in
  train) train ;;
  eval) evaluate ;;
  report) report ;;
  all) train; evaluate; report ;;
  *) echo "unknown phase $PHASE (train, eval, report or all)"; exit 2 ;;
esac
