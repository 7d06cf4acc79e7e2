#!/usr/bin/env python3
"""Greedy-generation agreement with `full`: for each policy and each of 10 fixed prompts, generate
N tokens greedily with `ferrite generate --json` and count the positions whose token equals the
`full` cache's token (positions past either sequence's end count as different unless both ended).

usage: agreement.py N THREADS POLICY... > out/gear/agreement.json   (env FERRITE: the binary)
"""
import json
import os
import subprocess
import sys

FERRITE = os.environ.get("FERRITE", "./target/release/ferrite")

PROMPTS = [
    "The history of the Roman Empire begins",
    "Once upon a time, in a small village by the sea,",
    "To make a good cup of tea, you should",
    "The three laws of thermodynamics state that",
    "In the year 1850, the city of London",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The best way to learn a new language is",
    "HAMLET. To be, or not to be, that is the question:",
    "Photosynthesis is the process by which plants",
    "Here is a recipe for a simple vegetable soup. Ingredients:",
]


def generate(prompt, kv, n, threads):
    out = subprocess.run(
        ["nice", FERRITE, "--threads", str(threads), "generate",
         "-p", prompt, "-n", str(n), "--kv", kv, "--json"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    n, threads, policies = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    runs = {kv: [generate(p, kv, n, threads) for p in PROMPTS] for kv in ["full"] + policies}
    result = {"tokens": n, "threads": threads, "prompts": PROMPTS, "policies": {}}
    for kv, gens in runs.items():
        same, first_diff = 0, []
        for g, ref in zip(gens, runs["full"]):
            a, b = g["tokens"], ref["tokens"]
            same += sum(1 for i in range(n) if (a[i] if i < len(a) else None) == (b[i] if i < len(b) else None))
            first_diff.append(next((i for i in range(n) if (a[i] if i < len(a) else None) != (b[i] if i < len(b) else None)), n))
        result["policies"][kv] = {
            "agreement": same / (n * len(PROMPTS)),
            "mean_first_divergence": sum(first_diff) / len(first_diff),
            "decode_tokens_per_second": sum(g["decode_tokens_per_second"] for g in gens) / len(gens),
            "kv_bytes_peak_mean": sum(g["kv_bytes_peak"] for g in gens) / len(gens),
            "generated_tokens": [len(g["tokens"]) for g in gens],
            "kv_policy": gens[0]["kv_policy"],
        }
        print(kv, json.dumps(result["policies"][kv]), file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
