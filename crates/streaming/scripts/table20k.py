#!/usr/bin/env python3
"""Prints the 20k-span Table 2 / Table 6 markdown of docs/streaming.md from
crates/streaming/results/corpus20k_*.json and the merged curves table2_20k.csv / sweep_20k.csv
(standard library only). Run from crates/streaming/results."""
import collections, csv, json

rows = collections.defaultdict(dict)
for f in ['table2_20k.csv', 'sweep_20k.csv']:
    for r in csv.DictReader(open(f)):
        rows[r['policy']][int(r['tokens'])] = float(r['ppl_running'])

CMD = 'ferrite --threads 1 ppl --stream --text data/shakespeare_gut_concat.txt'


def load(name):
    try:
        return json.load(open(f'corpus20k_{name}.json'))
    except FileNotFoundError:
        return None


def line(label, name, spec, tokens=20001):
    d = load(name)
    cmd = f'`{CMD} --max-tokens {tokens} --kv {spec} --score-every 1000 --json --curve out/c20k.csv`'
    if d is None:
        print(f'| {label} | not run (time) | | | | | {cmd} |')
        return
    c = rows.get(d['kv_policy'], {})
    pts = ' / '.join(f'{c[k]:.1f}' if k in c else '–' for k in (1000, 5000, 10000, 20000))
    ppl = f"{d['ppl']:.2f}" if d['tokens_scored'] > 100 else '(sampled only)'
    print(f"| {label} | {ppl} | {pts} | {d['ppl_sampled']:.2f} ({d['predictions_sampled']}) | "
          f"{d['kv_bytes_peak']:,} = {d['kv_bytes_final']:,} | {round(d['seconds'])} | {cmd} |")


HEAD = ('| cache config | ppl, 20,000 predictions | running ppl at 1k / 5k / 10k / 20k | '
        'ppl on the sampled predictions (count) | KV bytes peak = final | wall s | command |\n'
        '|---|---|---|---|---|---|---|')
print(HEAD)
for args in [('0+1024 (`window:1024`)', 'window_1024', 'window:1024'),
             ('1+1023', 'sink_1_1023', 'sink:1+1023'), ('2+1022', 'sink_2_1022', 'sink:2+1022'),
             ('4+1020', 'sink_4_1020', 'sink:4+1020'), ('8+1016', 'sink_8_1016', 'sink:8+1016'),
             ('`recompute:1024`', 'recompute_1024', 'recompute:1024')]:
    line(*args)
line('full, first 8192 tokens (8191 predictions)', 'full_8192', 'full', 8192)
print()
print(HEAD)
for args in [('4+252', 'sink_4_252', 'sink:4+252'), ('4+508', 'sink_4_508', 'sink:4+508'),
             ('4+1020', 'sink_4_1020', 'sink:4+1020'), ('4+2044', 'sink_4_2044', 'sink:4+2044'),
             ('`recompute:2048`', 'recompute_2048', 'recompute:2048')]:
    line(*args)
