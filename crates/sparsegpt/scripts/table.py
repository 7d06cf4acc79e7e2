#!/usr/bin/env python3
"""Prints the pruning table of docs/sparsegpt.md from the ppl JSON files that table.sh writes
(standard library only). Usage: python3 crates/sparsegpt/scripts/table.py [RUNS_DIR]"""
import json, os, sys

runs = sys.argv[1] if len(sys.argv) > 1 else '/work/scratch/sparse/runs'
cols = [('50%', '50'), ('60%', '60'), ('70%', '70'), ('2:4', '-2of4'), ('4:8', '-4of8')]
methods = [('magnitude', 'mag'), ('Wanda', 'wanda'), ('SparseGPT', 'sgpt')]


def ppl(name):
    try:
        return json.load(open(os.path.join(runs, f'ppl-{name}.json')))['ppl']
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


dense = ppl('dense')
print('| method | ' + ' | '.join(c for c, _ in cols) + ' |')
print('|---|' + '---|' * len(cols))
print('| dense f32 | ' + ' | '.join(f'{dense:.2f}' if dense else '–' for _ in cols) + ' |')
for label, stem in methods:
    cells = []
    for _, suffix in cols:
        v = ppl(stem + suffix)
        cells.append(f'{v:.2f}' if v else 'not run')
    print(f'| {label} | ' + ' | '.join(cells) + ' |')
