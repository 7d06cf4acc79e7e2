"""Export DiT parity fixtures for crates/dit/tests/parity.rs.

usage: python export_reference.py REF_DIR OUT_DIR
  REF_DIR  a checkout of facebookresearch/DiT (its models.py is imported, never copied)
  OUT_DIR  crates/dit/tests/fixtures

Writes, for tiny configurations with every weight redrawn N(0, 0.2) (the reference init zeroes
adaLN-Zero and the final layer, which would make the outputs trivially zero):
  reference_adaln_zero.{json,safetensors}: the official DiT (models.py; needs timm) with its
      weights (incl. the fixed pos_embed), inputs x, t, y and the outputs of forward(x, t, y) and
      of forward_with_cfg at scale 4 (first half of the reference's duplicated batch);
  design_<name>.{json,safetensors}: (hidden size 8, to keep the files small) our rendition (dit_designs.py) of each of the four block
      designs, with sequence conditions too; its adaLN-Zero is first checked against the official
      model on the official weights.
Run with the peer venv: ~/.cache/ferrite-peers/bin/python (torch CPU, timm, safetensors).
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dit_designs  # noqa: E402

BASE = dict(
    input_size=8,
    patch_size=2,
    in_channels=4,
    hidden_size=16,
    depth=2,
    num_heads=2,
    mlp_ratio=4.0,
    class_dropout_prob=0.1,
    num_classes=5,
    learn_sigma=True,
    conditioning="adaln-zero",
    cond_dim=None,
)


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def inputs(cfg, seed=123):
    g = torch.Generator().manual_seed(seed)
    b = 3
    x = torch.randn(b, cfg["in_channels"], cfg["input_size"], cfg["input_size"], generator=g)
    t = torch.tensor([0.0, 417.5, 999.0])
    y = torch.tensor([4, 0, 2])
    seq = torch.randn(b, 3, 6, generator=g)
    return x, t, y, seq


def write(out_dir, stem, cfg, tensors):
    tensors = {k: v.detach().contiguous().float() if v.is_floating_point() else v.contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(out_dir, stem + ".safetensors"))
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(cfg, f, indent=1)
    size = os.path.getsize(os.path.join(out_dir, stem + ".safetensors"))
    print(f"{stem}: {len(tensors)} tensors, {size} bytes")


def main():
    ref_dir, out_dir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, ref_dir)
    import models  # the official models.py

    torch.set_grad_enabled(False)
    os.makedirs(out_dir, exist_ok=True)
    cfg = dict(BASE)
    official = models.DiT(
        input_size=cfg["input_size"], patch_size=cfg["patch_size"], in_channels=cfg["in_channels"],
        hidden_size=cfg["hidden_size"], depth=cfg["depth"], num_heads=cfg["num_heads"],
        mlp_ratio=cfg["mlp_ratio"], class_dropout_prob=cfg["class_dropout_prob"],
        num_classes=cfg["num_classes"], learn_sigma=cfg["learn_sigma"],
    ).eval()
    randomise(official, 0)
    x, t, y, seq = inputs(cfg)
    out = official(x, t, y)
    null = torch.full_like(y, cfg["num_classes"])
    cfg_out = official.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), 4.0)[: len(x)]
    state = dict(official.state_dict())
    write(out_dir, "reference_adaln_zero", cfg, {
        **state, "input.x": x, "input.t": t, "input.y": y.to(torch.int64),
        "expected.labels": out, "expected.cfg": cfg_out,
    })

    # Our rendition equals the official model on the official weights.
    ours = dit_designs.DiT(cfg).eval()
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not missing and unexpected == ["pos_embed"], (missing, unexpected)
    diff = (ours(x, t, y) - out).abs().max().item()
    diff_cfg = (ours.forward_with_cfg(x, t, y, 4.0) - cfg_out).abs().max().item()
    print(f"rendition vs official adaLN-Zero: max abs diff {diff:.2e}, cfg {diff_cfg:.2e}")
    assert diff < 1e-5 and diff_cfg < 1e-5

    for i, design in enumerate(["in-context", "cross-attention", "adaln", "adaln-zero"]):
        dcfg = dict(BASE, hidden_size=8, conditioning=design, cond_dim=6)
        model = dit_designs.DiT(dcfg).eval()
        randomise(model, 10 + i)
        write(out_dir, "design_" + design.replace("-", "_"), dcfg, {
            **model.state_dict(), "input.x": x, "input.t": t, "input.y": y.to(torch.int64),
            "input.seq": seq,
            "expected.labels": model(x, t, y),
            "expected.sequence": model(x, t, seq=seq),
            "expected.cfg": model.forward_with_cfg(x, t, y, 4.0),
        })


if __name__ == "__main__":
    main()
