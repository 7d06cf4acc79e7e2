"""Prune a model with the SparseGPT reference implementation (IST-DASLab/sparsegpt) on given
calibration token ids, for the fidelity and speed comparison in docs/sparsegpt.md.

The reference repository is NOT part of ferrite: fetch it into a scratch folder and pass it as
--ref-dir; this script imports its `SparseGPT` class (sparsegpt.py, Algorithm 1) and drives it
with a CPU port of its `llama_sequential` (llama.py): same per-layer hooks, same
`fasterprune(sparsity, prunen, prunem, blocksize, percdamp)` calls, same `--true-sequential`
grouping (k/v/q, o, up/gate, down). The adaptations: CPU instead of CUDA, the decoder layers'
keyword arguments (attention mask, RoPE embeddings of transformers >= 4.45) captured whole by the
catcher, calibration ids read from ferrite's `--save-calib-ids` JSON, and the pruned model saved
with the input directory's tokenizer so `ferrite ppl --model OUT` evaluates it.

    python reference_prune.py --ref-dir /work/scratch/sparse-ref --model DENSE_HF_DIR \
        --calib-ids calib.json --sparsity 0.5 --true-sequential --out OUT_DIR
"""

import argparse
import json
import shutil
import sys
import time

import torch
import torch.nn as nn


def find_linears(module, name=""):
    if isinstance(module, nn.Linear):
        return {name: module}
    out = {}
    for child_name, child in module.named_children():
        out.update(find_linears(child, f"{name}.{child_name}" if name else child_name))
    return out


@torch.no_grad()
def llama_sequential(model, segments, args, SparseGPT):
    layers = model.model.layers
    n, seqlen = segments.shape
    inps = torch.zeros((n, seqlen, model.config.hidden_size), dtype=torch.float32)
    cache = {"i": 0, "kwargs": None}

    class Catcher(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, inp, **kwargs):
            inps[cache["i"]] = inp
            cache["i"] += 1
            cache["kwargs"] = kwargs
            raise ValueError

    layers[0] = Catcher(layers[0])
    for j in range(n):
        try:
            model(segments[j : j + 1])
        except ValueError:
            pass
    layers[0] = layers[0].module
    kwargs = cache["kwargs"]
    outs = torch.zeros_like(inps)

    def run(layer, j):
        out = layer(inps[j].unsqueeze(0), **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    for i in range(len(layers)):
        layer = layers[i]
        full = find_linears(layer)
        if args.true_sequential:
            groups = [
                ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"],
                ["self_attn.o_proj"],
                ["mlp.up_proj", "mlp.gate_proj"],
                ["mlp.down_proj"],
            ]
        else:
            groups = [list(full.keys())]
        for names in groups:
            gpts = {name: SparseGPT(full[name]) for name in names}

            def add_batch(name):
                def hook(_, inp, out):
                    gpts[name].add_batch(inp[0].data, out.data)

                return hook

            handles = [full[name].register_forward_hook(add_batch(name)) for name in names]
            for j in range(n):
                outs[j] = run(layer, j)
            for h in handles:
                h.remove()
            for name in names:
                print(i, name, flush=True)
                gpts[name].fasterprune(
                    args.sparsity,
                    prunen=args.prunen,
                    prunem=args.prunem,
                    percdamp=args.percdamp,
                    blocksize=args.blocksize,
                )
                gpts[name].free()
        for j in range(n):
            outs[j] = run(layer, j)
        inps, outs = outs, inps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref-dir", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--calib-ids", required=True)
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--prunen", type=int, default=0)
    p.add_argument("--prunem", type=int, default=0)
    p.add_argument("--blocksize", type=int, default=128)
    p.add_argument("--percdamp", type=float, default=0.01)
    p.add_argument("--true-sequential", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--report")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    # The reference calls CUDA helpers unconditionally; on CPU they are no-ops.
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    sys.path.insert(0, args.ref_dir)
    from sparsegpt import SparseGPT  # the reference's Algorithm 1
    from transformers import LlamaForCausalLM

    t0 = time.time()
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    model.config.use_cache = False
    calib = json.load(open(args.calib_ids))
    segments = torch.tensor(calib["segments"], dtype=torch.long)
    t_load = time.time() - t0
    t1 = time.time()
    llama_sequential(model, segments, args, SparseGPT)
    t_prune = time.time() - t1
    zeros = total = 0
    for name, w in model.named_parameters():
        if "layers." in name and name.endswith("proj.weight"):
            zeros += int((w == 0).sum())
            total += w.numel()
    model.save_pretrained(args.out, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        try:
            shutil.copy(f"{args.model}/{f}", f"{args.out}/{f}")
        except FileNotFoundError:
            pass
    report = {
        "load_seconds": t_load,
        "prune_seconds": t_prune,
        "total_seconds": time.time() - t0,
        "sparsity": zeros / total,
        "segments": list(segments.shape),
        "threads": args.threads,
        "true_sequential": args.true_sequential,
        "torch": torch.__version__,
    }
    print(json.dumps(report))
    if args.report:
        json.dump(report, open(args.report, "w"), indent=1)


if __name__ == "__main__":
    main()
