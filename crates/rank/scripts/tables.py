#!/usr/bin/env python3
"""Markdown tables for docs/rank.md from the JSON that `ferrite rank --json` writes.

Usage: python3 crates/rank/scripts/tables.py RESULT.json [--bert]

Prints, per panel (model state): Figure 2 rows (mean ± std of ||res(X_l)||_1,inf/||X_l||_1,inf,
mean-centred) on selected layers, with the paper's BERT values beside ours when --bert is given;
the argmin bracket next to the mean-centred ratio; and the path table. Standard library only.
"""
import json
import sys

# The paper's Figure 2, BERT panels, read from the reference repository's figure
# paper-plotting/figures/residual_BERT_vert_croped.pdf (see docs/rank.md).
BERT_LAYERS = [0, 1, 2, 3, 4, 5, 6, 8, 10, 12]
BERT = {
    "init": {
        "San": [0.612, 0.018, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000],
        "SanMlp": [0.597, 0.017, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000],
        "SanSkip": [0.607, 0.565, 0.559, 0.565, 0.562, 0.552, 0.529, 0.496, 0.472, 0.449],
        "Full": [0.597, 0.563, 0.535, 0.565, 0.537, 0.529, 0.493, 0.439, 0.406, 0.345],
    },
    "pretrained": {
        "San": [0.687, 0.676, 0.315, 0.139, 0.031, 0.003, 0.000, 0.000, 0.000, 0.000],
        "SanMlp": [0.687, 0.433, 0.209, 0.040, 0.002, 0.000, 0.000, 0.000, 0.000, 0.000],
        "SanSkip": [0.687, 0.717, 0.636, 0.489, 0.353, 0.223, 0.205, 0.233, 0.141, 0.074],
        "Full": [0.687, 0.666, 0.559, 0.504, 0.466, 0.401, 0.379, 0.390, 0.395, 0.310],
    },
}
LABEL = {"San": "SAN", "SanSkip": "SAN+skip", "SanMlp": "SAN+MLP", "Full": "full"}


def fmt(mean, std=None):
    s = f"{mean:.2e}"
    return s if std is None else f"{s} ± {std:.1e}"


def figure2(panel, bert):
    curves = panel["curves"]
    n = len(curves[0]["l1inf_mean"]["mean"])
    layers = sorted(set(BERT_LAYERS + [16, 20, 24, n - 1]) & set(range(n)))
    head = ["layer"]
    for c in curves:
        if bert is not None:
            head.append(f"BERT {LABEL[c['variant']]}")
        head.append(f"ours {LABEL[c['variant']]}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for l in layers:
        row = [str(l)]
        for c in curves:
            if bert is not None:
                b = bert[c["variant"]]
                row.append(f"{b[BERT_LAYERS.index(l)]:.3f}" if l in BERT_LAYERS else "")
            m = c["l1inf_mean"]
            row.append(fmt(m["mean"][l], m["std"][l]))
        print("| " + " | ".join(row) + " |")
    print()


def argmin(panel):
    curves = panel["curves"]
    n = len(curves[0]["l1inf_mean"]["mean"])
    layers = sorted({l for l in [1, 4, 12, n - 1] if l < n})
    print("| variant | layer | mean-centred | median-centred | argmin in [lower, upper] | Frobenius |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in curves:
        for l in layers:
            g = lambda k: c[k]["mean"][l]
            print(
                f"| {LABEL[c['variant']]} | {l} | {fmt(g('l1inf_mean'))} | {fmt(g('l1inf_median'))} "
                f"| [{fmt(g('l1inf_argmin_lower'))}, {fmt(g('l1inf_argmin_upper'))}] | {fmt(g('fro'))} |"
            )
    print()


def paths(panels):
    with_paths = [p for p in panels if p["paths"]]
    if not with_paths:
        return
    head = ["k", "share C(L,k)H^k/(H+1)^L"]
    for p in with_paths:
        head += [f"{p['label']}: rank-1 residual median [q1, q3]", "token-uniform median"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    n = len(with_paths[0]["paths"])
    for k in range(n):
        r0 = with_paths[0]["paths"][k]
        row = [str(r0["length"]), f"{r0['share']:.2e}"]
        for p in with_paths:
            r = p["paths"][k]
            q = r["rank1"]
            row += [
                f"{q['median']:.2e} [{q['q1']:.1e}, {q['q3']:.1e}]",
                f"{r['token_uniform']['median']:.2e}",
            ]
        print("| " + " | ".join(row) + " |")
    print(f"\n{with_paths[0]['paths'][0]['samples']} paths per length per panel.\n")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: tables.py RESULT.json [--bert]")
    with open(sys.argv[1]) as f:
        result = json.load(f)
    bert = "--bert" in sys.argv
    for panel in result["panels"]:
        state = "init" if "init" in panel["label"] or "random" in panel["label"] else "pretrained"
        print(f"### {panel['label']} ({panel['sequences']} x {panel['tokens']} tokens)\n")
        figure2(panel, BERT[state] if bert else None)
        argmin(panel)
    paths(result["panels"])


if __name__ == "__main__":
    main()
