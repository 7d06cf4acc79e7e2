#!/usr/bin/env python3
"""Markdown rows from out/gear/*.jsonl: ppl, KV bytes, average KV size vs an f16 cache (2 bytes
per element for every token held: the N-1 tokens fed), streaming tokens/s and speed vs full.

usage: summarise.py RESULTS.jsonl [agreement.json]
"""
import json
import sys

N_LAYER, CHANNELS = 30, 3 * 64  # SmolLM2-135M: 30 blocks, 3 KV heads of 64

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
agree = json.load(open(sys.argv[2]))["policies"] if len(sys.argv) > 2 else {}
full = next((r for r in rows if r.get("kv_policy") == "full"), None)
print("| policy | ppl | Δ vs full | KV bytes | avg KV size vs f16 | tok/s | speed vs full | agreement |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    held = r["tokens_scored"]  # tokens in the cache after the last step
    f16 = 2 * N_LAYER * held * CHANNELS * 2
    label = r.get("label", r["kv_policy"])
    d = f"{100 * (r['ppl'] / full['ppl'] - 1):+.2f} %" if full else ""
    sp = f"{r['tokens_per_second'] / full['tokens_per_second']:.2f}x" if full else ""
    a = agree.get(label, {}).get("agreement")
    a = f"{a:.3f}" if a is not None else ""
    print(f"| `{label}` | {r['ppl']:.3f} | {d} | {r['kv_bytes_peak']:,} | {r['kv_bytes_peak'] / f16:.3f} | "
          f"{r['tokens_per_second']:.2f} | {sp} | {a} |")
