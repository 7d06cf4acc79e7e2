#!/usr/bin/env python3
"""Writes crates/diffusion/tests/fixtures/dit_reference.json: the original DiT code's diffusion
(facebookresearch/DiT `diffusion/`, itself improved-diffusion's gaussian_diffusion.py) on fixed
inputs — training losses (mse, vb, loss and the gradient of the loss w.r.t. the model output),
respaced DDPM (learned_range) and DDIM sampling loops, and `DiT.forward_with_cfg` — which
crates/diffusion/tests/dit_reference_parity.rs checks our crate against.

The reference code is NOT part of this repository. Fetch facebookresearch/DiT elsewhere and pass
its root (the folder holding `diffusion/` and `models.py`); run with the peer venv:
    ~/.cache/ferrite-peers/bin/python crates/diffusion/scripts/dit_reference_fixtures.py --dit /path/to/DiT

Conventions: float64 throughout — the reference gathers its schedule coefficients with
`_extract_into_tensor(...).float()` (float32); the script replaces that helper with a float64
gather for the duration of the run, so what is compared is the algorithm, not float32 rounding; the "model" is the same closed form as diffusers_fixtures.py
(eps = 0.8 sin(1.3 x + t/500), variance values = tanh(0.7 x - 0.2 + t/1000)); sampling noise is
fixed by standing in for torch.randn_like during the loops.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dit_reference.json")
RNG = np.random.default_rng(1)
SHAPE = (2, 2, 2, 2)  # [B, C, H, W]


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


def randn(shape):
    return torch.from_numpy(RNG.standard_normal(shape))


def model(x, t, **_):
    t = t.double().view(-1, *([1] * (x.dim() - 1)))
    eps = 0.8 * torch.sin(1.3 * x + t / 500.0)
    return torch.cat([eps, torch.tanh(0.7 * x - 0.2 + t / 1000.0)], dim=1)


class FixedRandnLike:
    """Stands in for torch.randn_like, returning the recorded noise in order."""

    def __init__(self):
        self.drawn = []

    def __enter__(self):
        self.saved = torch.randn_like
        torch.randn_like = self

        return self

    def __call__(self, x, **_):
        z = torch.from_numpy(RNG.standard_normal(tuple(x.shape)))
        self.drawn.append(flat(z))
        return z

    def __exit__(self, *_):
        torch.randn_like = self.saved


def loss_cases(create_diffusion):
    cases = []
    for schedule, predict_xstart in (("linear", False), ("squaredcos_cap_v2", False), ("linear", True)):
        diffusion = create_diffusion("", noise_schedule=schedule, predict_xstart=predict_xstart)
        b = 4
        x0 = torch.round((torch.tanh(randn((b, 2, 3, 3))) + 1) * 127.5) / 127.5 - 1  # 8-bit levels
        noise = randn((b, 2, 3, 3))
        t = torch.tensor([0, 1, 500, 999])
        out = (0.5 * randn((b, 4, 3, 3))).requires_grad_(True)
        terms = diffusion.training_losses(lambda *a, **k: out, x0, t, noise=noise)
        terms["loss"].mean().backward()
        cases.append(dict(schedule="cosine" if schedule != "linear" else "linear",
                          prediction_type="sample" if predict_xstart else "epsilon",
                          x0=flat(x0), noise=flat(noise), t=t.tolist(), model_output=flat(out),
                          mse=flat(terms["mse"]), vb=flat(terms["vb"]), loss=flat(terms["loss"]),
                          grad=flat(out.grad)))
    return cases


def sampling_cases(create_diffusion):
    cases = []
    small = (1, 1, 2, 2)  # for the long loops, to keep the fixture small
    for name, respacing, method, eta, clip, shape in (
        ("ddpm_learned_range_respaced_10", "10", "ddpm", 0.0, False, SHAPE),
        ("ddpm_learned_range_respaced_10_clip", "10", "ddpm", 0.0, True, SHAPE),
        ("ddpm_learned_range_respaced_250", "250", "ddpm", 0.0, False, small),
        ("ddim_eta0_respaced_25", "25", "ddim", 0.0, False, SHAPE),
        ("ddim_eta1_respaced_ddim20", "ddim20", "ddim", 1.0, False, SHAPE),
        ("ddim_eta0_respaced_10_clip", "10", "ddim", 0.0, True, SHAPE),
    ):
        diffusion = create_diffusion(respacing)
        x_t = randn(shape)
        with FixedRandnLike() as noise:
            if method == "ddpm":
                out = diffusion.p_sample_loop(model, shape, noise=x_t.clone(), clip_denoised=clip,
                                                  device=torch.device("cpu"))
            else:
                out = diffusion.ddim_sample_loop(model, shape, noise=x_t.clone(), clip_denoised=clip, eta=eta,
                                                    device=torch.device("cpu"))
        cases.append(dict(name=name, sampler=method, eta=eta, clip=clip, respacing=respacing, shape=list(shape),
                          timesteps=sorted(diffusion.timestep_map, reverse=True),
                          x_t=flat(x_t), noise=noise.drawn, out=flat(out)))
    return cases


def cfg_case(DiT):
    class Fake:
        in_channels = 4

        def forward(self, x, t, y):
            # cond rows (y < 1000) and uncond rows differ; 8 output channels (eps + variance)
            yy = y.double().view(-1, 1, 1, 1)
            return torch.cat([torch.sin(x + yy / 100.0), torch.cos(x - yy / 200.0)], dim=1)

    x = randn((2, 4, 2, 2))
    z = torch.cat([x, x], 0)
    y = torch.tensor([3, 7, 1000, 1000])
    raw = Fake().forward(z, None, y)
    guided = DiT.forward_with_cfg(Fake(), z, None, y, 4.0)
    return dict(scale=4.0, model_output=flat(raw), shape=list(raw.shape), guided=flat(guided))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dit", required=True, help="root of a facebookresearch/DiT checkout")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.dit, "diffusion", "gaussian_diffusion.py")):
        sys.exit(f"error: {args.dit} does not look like a DiT checkout (no diffusion/gaussian_diffusion.py)")
    sys.path.insert(0, args.dit)
    torch.set_default_dtype(torch.float64)
    from diffusion import create_diffusion, gaussian_diffusion
    from models import DiT

    def extract_f64(arr, timesteps, broadcast_shape):
        res = torch.from_numpy(arr)[timesteps].double()
        return res.view(-1, *([1] * (len(broadcast_shape) - 1))).expand(broadcast_shape)

    gaussian_diffusion._extract_into_tensor = extract_f64

    fixture = dict(generator="crates/diffusion/scripts/dit_reference_fixtures.py",
                   torch_version=torch.__version__,
                   losses=loss_cases(create_diffusion), sampling=sampling_cases(create_diffusion),
                   cfg=cfg_case(DiT))
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    os.replace(tmp, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
