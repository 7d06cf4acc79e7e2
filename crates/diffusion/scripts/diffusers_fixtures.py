#!/usr/bin/env python3
"""Writes crates/diffusion/tests/fixtures/diffusers_parity.json: HF diffusers' DDPMScheduler and
DDIMScheduler outputs on fixed inputs, which crates/diffusion/tests/diffusers_parity.rs checks our
Scheduler against (so CI checks parity without Python).

Run with the peer venv (never from CI):
    ~/.cache/ferrite-peers/bin/python crates/diffusion/scripts/diffusers_fixtures.py

Conventions, so both sides compute the same thing:
* Sampler steps run in float64: after construction, the scheduler's betas / alphas / alphas_cumprod
  are re-derived in float64 from diffusers' own (float32) betas; the Rust test builds its schedule
  from the same betas with NoiseSchedule::from_betas. The schedule construction itself is compared
  separately (diffusers' float32 alphas_cumprod vs our float64 formula).
* The "model" is a closed-form function of (x, t), written identically in the Rust test:
      eps = 0.8 sin(1.3 x + t / 500),   variance values = tanh(0.7 x - 0.2 + t / 1000)
* Noise is fixed (numpy, seed 0) and passed in: DDIM via `variance_noise`, DDPM by replacing the
  module's `randn_tensor` for the duration of each step.
* Documented deviation: diffusers' DDPM adds noise on the last step whenever its timestep is > 0
  (trailing spacing), where improved-diffusion (and we) return the mean; the fixture passes zero
  noise on that step and records the deviation separately.
"""

import json
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "diffusers_parity.json")
SHAPE = (2, 1, 2, 2)  # [B, C, H, W]: tiny, so the fixture stays small
RNG = np.random.default_rng(0)


def denoise(x, t, learned):
    eps = 0.8 * torch.sin(1.3 * x + t / 500.0)
    if not learned:
        return eps
    return torch.cat([eps, torch.tanh(0.7 * x - 0.2 + t / 1000.0)], dim=1)


def to_f64(sched):
    """Re-derive the schedule tensors in float64 from diffusers' own betas."""
    sched.betas = sched.betas.double()
    sched.alphas = 1.0 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return sched


def flat(t):
    return [float(v) for v in t.reshape(-1)]


def flat_f32(t):
    """float32 values in their shortest round-trip form (parse as f64, cast to f32: exact)."""
    return [float(np.format_float_positional(np.float32(v), unique=True)) for v in t.reshape(-1)]


def schedule_key(T, beta_schedule):
    return f"{'cosine' if beta_schedule == 'squaredcos_cap_v2' else beta_schedule}_{T}"


def randn(shape=SHAPE):
    return torch.from_numpy(RNG.standard_normal(shape))


class FixedNoise:
    """Stands in for diffusers' randn_tensor in scheduling_ddpm during one step."""

    def __init__(self, noise):
        self.noise = noise

    def __enter__(self):
        self.saved = scheduling_ddpm.randn_tensor
        scheduling_ddpm.randn_tensor = lambda shape, **_: self.noise.reshape(shape)

    def __exit__(self, *_):
        scheduling_ddpm.randn_tensor = self.saved


def make(kind, T, beta_schedule, prediction_type, spacing, clip, variance_type=None):
    common = dict(
        num_train_timesteps=T,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        clip_sample=clip,
        clip_sample_range=1.0,
    )
    if kind == "ddpm":
        return DDPMScheduler(variance_type=variance_type, **common)
    return DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)


def run_case(name, kind, *, T=1000, n=10, beta_schedule="linear", prediction_type="epsilon",
             spacing="leading", clip=False, variance_type="fixed_small", eta=0.0):
    sched = make(kind, T, beta_schedule, prediction_type, spacing, clip, variance_type)
    if n is not None:
        sched.set_timesteps(n)
    to_f64(sched)
    learned = kind == "ddpm" and variance_type == "learned_range"
    x = randn()
    case = dict(name=name, sampler=kind, num_train_timesteps=T, num_inference_steps=n,
                beta_schedule=beta_schedule, prediction_type=prediction_type, timestep_spacing=spacing,
                clip_sample=clip, variance_type=variance_type, eta=eta,
                schedule=schedule_key(T, beta_schedule), timesteps=[int(t) for t in sched.timesteps],
                x_t=flat(x), noise=[], trajectory=[])
    last_step_noise_effect = 0.0
    steps = list(sched.timesteps)
    for i, t in enumerate(steps):
        out = denoise(x, float(t), learned)
        last = i == len(steps) - 1
        z = randn()
        if kind == "ddpm":
            if last and int(t) > 0:
                with FixedNoise(z):
                    noisy = sched.step(out, t, x).prev_sample
                with FixedNoise(torch.zeros_like(z)):
                    x_new = sched.step(out, t, x).prev_sample
                last_step_noise_effect = float((noisy - x_new).abs().max())
                z = None
            else:
                with FixedNoise(z):
                    x_new = sched.step(out, t, x).prev_sample
                if last:
                    z = None  # diffusers adds no noise at t = 0
        else:
            x_new = sched.step(out, t, x, eta=eta, variance_noise=z).prev_sample
            if eta == 0.0 or last:
                z = None
        case["noise"].append(None if z is None else flat(z))
        case["trajectory"].append(flat(x_new))
        x = x_new
    case["diffusers_last_step_noise_max_abs"] = last_step_noise_effect
    return case


def spacing_lists():
    out = []
    for T in (1000, 50):
        for n in (1, 3, 7, 10, 50, 250):
            if n > T:
                continue
            for spacing in ("linspace", "leading", "trailing"):
                s = DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
                s.set_timesteps(n)
                d = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
                d.set_timesteps(n)
                assert list(s.timesteps) == list(d.timesteps)
                out.append(dict(num_train_timesteps=T, n=n, spacing=spacing,
                                timesteps=[int(t) for t in s.timesteps]))
    return out


def schedules():
    """diffusers' float32 betas (the sampler cases use them, in float64) and, for T = 1000, its
    float32 alphas_cumprod (compared with our float64 construction)."""
    out = {}
    for T, beta_schedule in ((1000, "linear"), (1000, "squaredcos_cap_v2"), (50, "linear")):
        s = DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule)
        entry = dict(betas_f32=flat_f32(s.betas))
        if T == 1000:
            entry["alphas_cumprod_f32"] = flat_f32(s.alphas_cumprod)
        out[schedule_key(T, beta_schedule)] = entry
    return out


def forward_process():
    s = to_f64(DDPMScheduler(num_train_timesteps=1000))
    x0, noise = randn((4, 1, 2, 2)), randn((4, 1, 2, 2))
    t = torch.tensor([0, 10, 500, 999])
    return dict(schedule="linear_1000", x0=flat(x0), noise=flat(noise), t=t.tolist(),
                add_noise=flat(s.add_noise(x0, noise, t)), velocity=flat(s.get_velocity(x0, noise, t)))


def main():
    torch.set_default_dtype(torch.float64)
    cases = [
        run_case("ddpm_fixed_small_leading", "ddpm"),
        run_case("ddpm_fixed_large_leading", "ddpm", variance_type="fixed_large"),
        run_case("ddpm_learned_range_leading", "ddpm", variance_type="learned_range"),
        run_case("ddpm_fixed_small_linspace", "ddpm", spacing="linspace"),
        run_case("ddpm_learned_range_linspace_cosine", "ddpm", variance_type="learned_range",
                 spacing="linspace", beta_schedule="squaredcos_cap_v2"),
        run_case("ddpm_fixed_small_trailing", "ddpm", spacing="trailing"),
        run_case("ddpm_fixed_large_trailing", "ddpm", variance_type="fixed_large", spacing="trailing"),
        run_case("ddpm_sample_clip_leading", "ddpm", prediction_type="sample", clip=True),
        run_case("ddpm_eps_clip_linspace", "ddpm", clip=True, spacing="linspace"),
        run_case("ddpm_v_cosine_leading", "ddpm", prediction_type="v_prediction",
                 beta_schedule="squaredcos_cap_v2"),
        run_case("ddpm_learned_range_full_chain_T50", "ddpm", T=50, n=None, variance_type="learned_range"),
        run_case("ddim_eta0_leading", "ddim"),
        run_case("ddim_eta1_leading", "ddim", eta=1.0),
        run_case("ddim_eta0_trailing_v_cosine", "ddim", spacing="trailing", prediction_type="v_prediction",
                 beta_schedule="squaredcos_cap_v2"),
        run_case("ddim_eta05_sample_clip_leading", "ddim", eta=0.5, prediction_type="sample", clip=True),
        run_case("ddim_eta1_linspace", "ddim", eta=1.0, spacing="linspace"),
    ]
    fixture = dict(
        generator="crates/diffusion/scripts/diffusers_fixtures.py",
        diffusers_version=diffusers.__version__,
        torch_version=torch.__version__,
        shape=list(SHAPE),
        schedules=schedules(),
        forward=forward_process(),
        spacing=spacing_lists(),
        cases=cases,
    )
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    os.replace(tmp, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes), {len(cases)} sampler cases")
    for c in cases:
        if c["diffusers_last_step_noise_max_abs"]:
            print(f"  {c['name']}: diffusers' last-step noise would move the sample by up to "
                  f"{c['diffusers_last_step_noise_max_abs']:.3g} (zeroed in the fixture)")


if __name__ == "__main__":
    sys.exit(main())
