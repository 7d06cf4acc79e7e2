#!/usr/bin/env bash
# Runs the pruning table of docs/sparsegpt.md: each (method, sparsity) pruned with `ferrite prune`
# on the same calibration, then `ferrite ppl` on the first $TOKENS tokens of Hamlet (ctx 2048),
# plus the SparseGPT reference (IST-DASLab/sparsegpt, fetched into $REF) on the same calibration
# ids. Results land in $RUNS/*.json and $RUNS/*.time (GNU time). Resumable: finished steps are
# skipped. Usage: bash crates/sparsegpt/scripts/table.sh [step ...]   (default: all steps)
set -u
FERRITE=${FERRITE:-target/release/ferrite}
RUNS=${RUNS:-/work/scratch/sparse/runs}
REF=${REF:-/work/scratch/sparse-ref}
PY=${PY:-$HOME/.cache/ferrite-peers/bin/python}
DENSE=${DENSE:-$RUNS/dense}
TOKENS=${TOKENS:-4096}
CALIB="--nsamples 16 --seqlen 512 --seed 0"
mkdir -p "$RUNS"
T="/usr/bin/time -f %U_user_%S_sys_%e_wall_%M_KB"

dense() { [ -d "$DENSE" ] || $FERRITE --threads 2 prune --method dense --out "$DENSE"; }
calib() { [ -f "$RUNS/calib.json" ] || $FERRITE --threads 2 prune --model "$DENSE" --method magnitude --sparsity 0.5 $CALIB --save-calib-ids "$RUNS/calib.json" --out "$RUNS/tmp-calib" && rm -rf "$RUNS/tmp-calib"; }
ppl() { # name dir
  [ -f "$RUNS/ppl-$1.json" ] || nice -n 10 $T -o "$RUNS/ppl-$1.time" $FERRITE --threads 2 ppl --model "$2" --dtype f32 --ctx 2048 --max-tokens "$TOKENS" --json > "$RUNS/ppl-$1.json"
}
ours() { # name method pattern-flags...
  local name=$1 method=$2; shift 2
  [ -d "$RUNS/$name" ] || nice -n 10 $T -o "$RUNS/$name.time" $FERRITE --threads 2 prune --model "$DENSE" --method "$method" "$@" --calib-ids "$RUNS/calib.json" --out "$RUNS/$name" --report "$RUNS/$name.json" > "$RUNS/$name.log"
  ppl "$name" "$RUNS/$name"
}
ref() { # name reference-flags...
  local name=$1; shift
  [ -d "$RUNS/$name" ] || nice -n 10 $T -o "$RUNS/$name.time" "$PY" crates/sparsegpt/scripts/reference_prune.py --ref-dir "$REF" --model "$DENSE" --calib-ids "$RUNS/calib.json" --threads 2 --true-sequential "$@" --out "$RUNS/$name" --report "$RUNS/$name.json" > "$RUNS/$name.log" 2>&1
  ppl "$name" "$RUNS/$name"
}

steps=${*:-"base s50 r50 w50 m50 s24 r24 w24 m24 s60 w60 m60 s70 w70 m70 s48 w48 m48"}
for s in $steps; do
  case $s in
    base) dense; calib; ppl dense "$DENSE" ;;
    s50) ours sgpt50 sparsegpt --sparsity 0.5 ;;
    w50) ours wanda50 wanda --sparsity 0.5 ;;
    m50) ours mag50 magnitude --sparsity 0.5 ;;
    r50) ref ref-sgpt50 --sparsity 0.5 ;;
    s24) ours sgpt-2of4 sparsegpt --nm 2:4 ;;
    w24) ours wanda-2of4 wanda --nm 2:4 ;;
    m24) ours mag-2of4 magnitude --nm 2:4 ;;
    r24) ref ref-sgpt-2of4 --prunen 2 --prunem 4 ;;
    s48) ours sgpt-4of8 sparsegpt --nm 4:8 ;;
    w48) ours wanda-4of8 wanda --nm 4:8 ;;
    m48) ours mag-4of8 magnitude --nm 4:8 ;;
    s60) ours sgpt60 sparsegpt --sparsity 0.6 ;;
    w60) ours wanda60 wanda --sparsity 0.6 ;;
    m60) ours mag60 magnitude --sparsity 0.6 ;;
    s70) ours sgpt70 sparsegpt --sparsity 0.7 ;;
    w70) ours wanda70 wanda --sparsity 0.7 ;;
    m70) ours mag70 magnitude --sparsity 0.7 ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
  echo "done $s $(date -u +%H:%M:%S)"
done
