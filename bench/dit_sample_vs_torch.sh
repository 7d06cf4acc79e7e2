#!/usr/bin/env bash
# DiT sampling throughput, ferrite vs PyTorch (issue 6), alternated run by run: each round runs
# the PyTorch script's bare no_grad forwards (batch 250), then `ferrite diffusion sample` (DDIM 50
# over 250 images, the whole sampling loop timed) through the hand-written forward and through
# candle's (`--candle-forward`); prints image-forwards/s of each (ferrite: images/s x steps) and
# the ratio to PyTorch. Needs a trained checkpoint (make demo-diffusion or docs/diffusion.md) and
# the peers venv from ../shared/peers/setup.sh; developer machines only.
# usage: bash bench/dit_sample_vs_torch.sh THREADS ROUNDS [CHECKPOINT]
set -euo pipefail
th=${1:?threads} rounds=${2:?rounds}
ck=${3:-out/diffusion/cpu-tiny.safetensors}
bin=${FERRITE_BIN:-target/release/ferrite}
py=${PEER_PYTHON:-$HOME/.cache/ferrite-peers/bin/python}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
field() { python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j[sys.argv[1]]*float(sys.argv[2]),1))' "$1" "$2"; }
for _ in $(seq "$rounds"); do
  torch=$("$py" bench/dit_train_torch.py --threads "$th" --patch 7 --steps 2 --warmup 1 2>/dev/null | field forward_images_per_sec 1)
  line="threads $th pytorch $torch"
  for mode in hand candle; do
    flag=(); [ $mode = candle ] && flag=(--candle-forward)
    f=$("$bin" --threads "$th" diffusion sample --checkpoint "$ck" --sampler ddim --steps 50 \
      --per-class 25 --json --quiet --out "$dir/grid.png" "${flag[@]}" 2>/dev/null | field images_per_sec 50)
    line+=" ferrite/$mode $f ($(python3 -c "print(round($f/$torch,2))")x)"
  done
  echo "$line"
done
