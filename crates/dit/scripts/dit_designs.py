"""Our PyTorch rendition of the four DiT block designs (Peebles & Xie 2023, §3.2, Figure 3).

Written for parity checks of crates/dit (same tensor names as the Rust model): in-context,
cross-attention, adaLN and adaLN-Zero, class-label or sequence conditions. Used only by
export_reference.py (never by CI); the adaLN-Zero variant is checked there against the official
models.py on the same weights.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


def layer_norm(x, affine=None):
    if affine is None:
        return F.layer_norm(x, x.shape[-1:], eps=EPS)
    return F.layer_norm(x, x.shape[-1:], affine.weight, affine.bias, eps=EPS)


class Affine(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def heads(x, n, h):
    b, length, width = x.shape
    return x.reshape(b, length, n, h, width // (n * h)).permute(2, 0, 3, 1, 4)


def attend(q, k, v):
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    b, h, n, dh = q.shape
    return (w @ v).transpose(1, 2).reshape(b, n, h * dh)


class SelfAttention(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.qkv, self.proj, self.h = nn.Linear(d, 3 * d), nn.Linear(d, d), h

    def forward(self, x):
        q, k, v = heads(self.qkv(x), 3, self.h)
        return self.proj(attend(q, k, v))


class CrossAttention(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.q, self.kv, self.proj, self.h = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d), h

    def forward(self, x, ctx):
        (q,) = heads(self.q(x), 1, self.h)
        k, v = heads(self.kv(ctx), 2, self.h)
        return self.proj(attend(q, k, v))


class Mlp(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, m), nn.Linear(m, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, design, d, h, m):
        super().__init__()
        self.design = design
        adaptive = design in ("adaln", "adaln-zero")
        if not adaptive:
            self.norm1, self.norm2 = Affine(d), Affine(d)
        self.attn, self.mlp = SelfAttention(d, h), Mlp(d, m)
        if design == "cross-attention":
            self.norm_cross, self.cross_attn = Affine(d), CrossAttention(d, h)
        if adaptive:
            chunks = 6 if design == "adaln-zero" else 4
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, chunks * d))

    def forward(self, x, vec, tokens):
        if self.design == "adaln-zero":
            s1, c1, g1, s2, c2, g2 = self.adaLN_modulation(vec).chunk(6, dim=1)
            x = x + g1[:, None] * self.attn(modulate(layer_norm(x), s1, c1))
            return x + g2[:, None] * self.mlp(modulate(layer_norm(x), s2, c2))
        if self.design == "adaln":
            s1, c1, s2, c2 = self.adaLN_modulation(vec).chunk(4, dim=1)
            x = x + self.attn(modulate(layer_norm(x), s1, c1))
            return x + self.mlp(modulate(layer_norm(x), s2, c2))
        x = x + self.attn(layer_norm(x, self.norm1))
        if self.design == "cross-attention":
            x = x + self.cross_attn(layer_norm(x, self.norm_cross), tokens)
        return x + self.mlp(layer_norm(x, self.norm2))


def sincos_2d(d, g):
    quarter = d // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = []
    for i in range(g):
        for j in range(g):
            parts = []
            for pos in (j, i):
                parts += [torch.sin(pos * omega), torch.cos(pos * omega)]
            rows.append(torch.cat(parts))
    return torch.stack(rows).float()


class Sequential2(nn.Module):
    """Holds `mlp.0` and `mlp.2` like the reference's nn.Sequential(Linear, SiLU, Linear)."""

    def __init__(self, d):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t):
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Embed(nn.Module):
    def __init__(self, rows, d):
        super().__init__()
        self.embedding_table = nn.Embedding(rows, d)


class SeqEmbed(nn.Module):
    def __init__(self, k, d):
        super().__init__()
        self.proj = nn.Linear(k, d)
        self.null_token = nn.Parameter(torch.zeros(d))


class PatchProj(nn.Module):
    def __init__(self, c, d, p):
        super().__init__()
        self.proj = nn.Conv2d(c, d, p, stride=p)


class Final(nn.Module):
    def __init__(self, design, d, out):
        super().__init__()
        self.adaptive = design in ("adaln", "adaln-zero")
        if self.adaptive:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        else:
            self.norm_final = Affine(d)
        self.linear = nn.Linear(d, out)

    def forward(self, x, vec):
        if self.adaptive:
            shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
            return self.linear(modulate(layer_norm(x), shift, scale))
        return self.linear(layer_norm(x, self.norm_final))


class DiT(nn.Module):
    """cfg: the Rust DitConfig as a dict (serde names)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, p, c = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"]
        self.out_channels = 2 * c if cfg["learn_sigma"] else c
        self.design = cfg["conditioning"]
        self.x_embedder = PatchProj(c, d, p)
        self.t_embedder = Sequential2(d)
        self.null = cfg["num_classes"]
        self.y_embedder = Embed(cfg["num_classes"] + int(cfg["class_dropout_prob"] > 0), d)
        if cfg.get("cond_dim"):
            self.seq_embedder = SeqEmbed(cfg["cond_dim"], d)
        m = int(d * cfg["mlp_ratio"])
        self.blocks = nn.ModuleList(Block(self.design, d, cfg["num_heads"], m) for _ in range(cfg["depth"]))
        self.final_layer = Final(self.design, d, p * p * self.out_channels)
        self.register_buffer("pos", sincos_2d(d, cfg["input_size"] // p)[None], persistent=False)

    def forward(self, x, t, y=None, seq=None, drop=None):
        b = x.shape[0]
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos
        t_emb = self.t_embedder(t)
        if drop is None:
            drop = torch.zeros(b, dtype=torch.bool)
        if seq is None:
            labels = torch.where(drop, torch.full_like(y, self.null), y)
            c_tok = self.y_embedder.embedding_table(labels)[:, None]
        else:
            c_tok = self.seq_embedder.proj(seq)
            null = self.seq_embedder.null_token.expand_as(c_tok)
            c_tok = torch.where(drop[:, None, None], null, c_tok)
        vec = t_emb + c_tok.mean(1)
        ctx = torch.cat([t_emb[:, None], c_tok], dim=1)
        n = tokens.shape[1]
        h = torch.cat([tokens, ctx], dim=1) if self.design == "in-context" else tokens
        for block in self.blocks:
            h = block(h, vec, ctx)
        h = self.final_layer(h[:, :n], vec)
        p, oc, g = self.cfg["patch_size"], self.out_channels, self.cfg["input_size"] // self.cfg["patch_size"]
        h = h.reshape(b, g, g, p, p, oc)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(b, oc, g * p, g * p)

    def forward_with_cfg(self, x, t, y, scale, guided=3):
        b = x.shape[0]
        drop = torch.arange(2 * b) >= b
        out = self.forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]), drop=drop)
        guided = min(guided, out.shape[1])
        cond, uncond = out[:b], out[b:]
        eps = uncond[:, :guided] + scale * (cond[:, :guided] - uncond[:, :guided])
        return torch.cat([eps, cond[:, guided:]], dim=1)
