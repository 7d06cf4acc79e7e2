"""PyTorch (CPU) rendition of ferrite's DiT training step, for the side-by-side throughput figure.

Same model as `DitConfig::preset("cpu-tiny")` (adaLN-Zero DiT, Peebles & Xie 2023: 28x28x1 input,
patch 7 -> 16 tokens as ferrite's CPU recipe, or `--patch 4` -> 49 tokens as the preset; hidden 128, depth 4, 4 heads, MLP ratio 4, 10 classes + null, 256 sinusoidal
timestep features), the same step (t ~ U{0..999}, eps ~ N(0, I), linear DDPM betas, MSE on eps,
AdamW), the same batch. Random data of the right shape: the speed does not depend on the pixels.

    ~/.cache/ferrite-peers/bin/python bench/dit_train_torch.py --threads 2 --batch 32 --steps 30
prints JSON: train images/s and sampling (forward-only) images/s.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_2d(dim, grid):
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    gy, gx = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    emb = torch.cat([one_d(dim // 2, gy), one_d(dim // 2, gx)], dim=1)
    return emb.float().unsqueeze(0)


class TimestepEmbedder(nn.Module):
    def __init__(self, d, freq=256):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t):
        half = self.freq // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        a = t.float()[:, None] * f[None]
        return self.mlp(torch.cat([torch.cos(a), torch.sin(a)], dim=-1))


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio=4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        m = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, m), nn.GELU(approximate="tanh"), nn.Linear(m, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def attn(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        w = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        return self.proj((w.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x, c):
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), s1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), s2, sc2))


class DiT(nn.Module):
    def __init__(self, size=28, patch=4, chans=1, d=128, depth=4, heads=4, classes=10):
        super().__init__()
        self.patch, self.chans, self.grid = patch, chans, size // patch
        self.x_embed = nn.Conv2d(chans, d, patch, patch)
        self.register_buffer("pos", sincos_2d(d, self.grid))
        self.t_embed = TimestepEmbedder(d)
        self.y_embed = nn.Embedding(classes + 1, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, patch * patch * chans)

    def forward(self, x, t, y):
        h = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos
        c = self.t_embed(t) + self.y_embed(y)
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.ada(c).chunk(2, dim=1)
        h = self.out(modulate(self.norm(h), shift, scale))
        b, g, p, ch = h.shape[0], self.grid, self.patch, self.chans
        h = h.reshape(b, g, g, p, p, ch).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, ch, g * p, g * p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patch", type=int, default=7, help="7 = ferrite's CPU recipe, 4 = cpu-tiny as preset")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sample-batch", type=int, default=250)
    ap.add_argument("--sample-steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = DiT(patch=a.patch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    x0 = torch.rand(a.batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (a.batch,))

    def step():
        t = torch.randint(0, 1000, (a.batch,))
        eps = torch.randn_like(x0)
        ab = abar[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        loss = ((model(xt, t, y) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    train_secs = time.perf_counter() - t0
    xs = torch.randn(a.sample_batch, 1, 28, 28)
    ys = torch.randint(0, 10, (a.sample_batch,))
    with torch.no_grad():
        model(xs, torch.full((a.sample_batch,), 500), ys)
        t0 = time.perf_counter()
        for i in range(a.sample_steps):
            model(xs, torch.full((a.sample_batch,), 999 - i), ys)
        fwd_secs = time.perf_counter() - t0
    print(json.dumps({
        "impl": f"pytorch {torch.__version__}", "threads": a.threads, "batch": a.batch, "patch": a.patch,
        "train_images_per_sec": a.steps * a.batch / train_secs,
        "forward_images_per_sec": a.sample_steps * a.sample_batch / fwd_secs,
        "params": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
