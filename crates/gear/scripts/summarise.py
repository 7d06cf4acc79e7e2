#!/usr/bin/env python3
"""Markdown rows from out/gear/*.jsonl: ppl, KV bytes, average KV size vs an f16 cache (2 bytes
per element for every token held: the N-1 tokens fed), CPU time per decoded token (`cpu_s`, from
crates/gear/scripts/table.sh) and decode speed vs full from it, greedy agreement with full.

usage: summarise.py RESULTS.jsonl [agreement.json ...] [kv_bytes.tsv]
(kv_bytes.tsv: output of `cargo run --release -p ferrite-gear --example kv_bytes -- 4095 SPEC...`,
adds the exact average KV size at that length)
"""
import json
import sys

N_LAYER, CHANNELS = 30, 3 * 64  # SmolLM2-135M: 30 blocks, 3 KV heads of 64

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
agree, at_len = {}, {}
for path in sys.argv[2:]:
    if path.endswith(".tsv"):
        lines = [l.rstrip("\n").split("\t") for l in open(path)][1:]
        at_len = {l[1]: (int(l[0]) + 1, float(l[3])) for l in lines}
    else:
        agree.update(json.load(open(path))["policies"])
full = next((r for r in rows if r.get("kv_policy") == "full"), None)
n = next(iter(at_len.values()))[0] if at_len else None
extra = f" avg KV size at {n} tokens |" if n else ""
print(f"| policy | ppl | Δ vs full | KV bytes (peak) | avg KV size vs f16 |{extra} CPU ms / token | decode speed vs full (CPU time) | greedy agreement |")
print("|---|---|---|---|---|" + ("---|" if n else "") + "---|---|---|")
for r in rows:
    held = r["tokens_scored"]  # tokens in the cache after the last step
    f16 = 2 * N_LAYER * held * CHANNELS * 2
    label = r.get("label", r["kv_policy"])
    d = f"{100 * (r['ppl'] / full['ppl'] - 1):+.2f} %" if full and r is not full else "—"
    cpu = r.get("cpu_s")
    ms = f"{1000 * cpu / held:.1f}" if cpu else ""
    sp = f"{full['cpu_s'] / cpu:.2f}×" if cpu and full and full.get("cpu_s") else ""
    a = agree.get(label, {}).get("agreement")
    a = f"{a:.3f}" if a is not None else ""
    x = ""
    if n:
        x = f" {at_len[label][1]:.3f} |" if label in at_len else (" 2.000 (f32) |" if label == "full" else " |")
    print(f"| `{label}` | {r['ppl']:.3f} | {d} | {r['kv_bytes_peak']:,} | {r['kv_bytes_peak'] / f16:.3f} |{x} "
          f"{ms} | {sp} | {a} |")
