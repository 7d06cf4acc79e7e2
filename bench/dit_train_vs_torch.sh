#!/usr/bin/env bash
# DiT training throughput, ferrite vs PyTorch (issue 6), alternated run by run: each round runs
# the PyTorch script, then every ferrite binary (hand-written backward, and with --autograd
# the candle autograd path), same model (cpu-tiny, patch 7), same batch 32; prints train
# images/s of each and the ratio to PyTorch. Developer machines only: needs the peers venv from
# ../shared/peers/setup.sh. Both figures leave out 3 warm-up steps and time the step loop only
# (ferrite's `steady_images_per_sec`: no checkpoint write; its steps also update the EMA and
# draw label dropout, which the PyTorch loop does not).
# usage: bash bench/dit_train_vs_torch.sh THREADS ROUNDS [FERRITE_BIN...]
set -euo pipefail
th=${1:?threads} rounds=${2:?rounds}
shift 2
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/ferrite)
py=${PEER_PYTHON:-$HOME/.cache/ferrite-peers/bin/python}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ips() { python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j[sys.argv[1]],1))' "$1"; }
for _ in $(seq "$rounds"); do
  torch=$("$py" bench/dit_train_torch.py --threads "$th" --patch 7 2>/dev/null | ips train_images_per_sec)
  line="threads $th pytorch $torch"
  for b in "${bins[@]}"; do
    for mode in hand autograd; do
      flag=(); [ $mode = autograd ] && flag=(--autograd)
      f=$("$b" --threads "$th" diffusion train --steps 40 --train-images 4096 --json --quiet \
        --checkpoint "$dir/x.safetensors" "${flag[@]}" 2>/dev/null | ips steady_images_per_sec)
      rm -f "$dir"/x.*
      line+=" $(basename "$b")/$mode $f ($(python3 -c "print(round($f/$torch,2))")x)"
    done
  done
  echo "$line"
done
