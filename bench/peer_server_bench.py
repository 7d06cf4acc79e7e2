#!/usr/bin/env python3
"""Load generator for OpenAI-compatible servers (ferrite serve, llama-cpp-python's server).

For each concurrency level N it opens N streaming chat requests at once and records, per stream,
the time to first token (first non-empty content delta) and the decode rate (content chunks
after the first / time from first to last). Standard library only, so it measures any server
the same way. Given several servers (repeat --url/--label) it alternates them level by level
and round by round, so all see the same machine load, and prints medians over rounds and, for
two servers, the ratios. One JSON line per run, then markdown tables.

  python3 bench/peer_server_bench.py --url http://127.0.0.1:18080 --label ferrite \
      --url http://127.0.0.1:18081 --label llama.cpp --levels 1,4,16 --max-tokens 32 --rounds 2
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

PROMPT = "Write a short story about a robot who learns to paint."


def one_stream(url, model, max_tokens, seed, out, barrier):
    u = urllib.parse.urlparse(url)
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": seed,
        "stream": True,
    })
    barrier.wait()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out.append({"error": resp.status, "body": resp.read()[:200].decode(errors="replace")})
        return
    first = last = None
    chunks = 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        c = json.loads(data)
        choices = c.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            now = time.perf_counter()
            chunks += 1
            if first is None:
                first = now
            last = now
    conn.close()
    end = time.perf_counter()
    if first is None:
        out.append({"error": "no tokens"})
        return
    out.append({
        "ttft": first - t0,
        "chunks": chunks,
        "tps": (chunks - 1) / (last - first) if chunks > 1 and last > first else float("nan"),
        "total": end - t0,
    })


def level(url, model, n, max_tokens):
    out = []
    barrier = threading.Barrier(n)
    threads = [threading.Thread(target=one_stream, args=(url, model, max_tokens, i, out, barrier))
               for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in out if "error" not in r]
    errors = [r for r in out if "error" in r]
    tps = [r["tps"] for r in ok if r["tps"] == r["tps"]]
    return {
        "concurrency": n,
        "ok": len(ok),
        "errors": errors[:3],
        "ttft_median_s": statistics.median(r["ttft"] for r in ok) if ok else None,
        "ttft_max_s": max(r["ttft"] for r in ok) if ok else None,
        "tps_per_stream_mean": statistics.mean(tps) if tps else None,
        "aggregate_tps": sum(r["chunks"] for r in ok) / wall,
        "chunks_mean": statistics.mean(r["chunks"] for r in ok) if ok else None,
        "wall_s": wall,
    }


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def fmt(x, d=2):
    return "-" if x is None else f"{x:.{d}f}"


def side_by_side(servers, levels, max_tokens, rounds):
    """Alternates servers level by level, round by round, so both see the same machine load;
    returns per (label, level) the median over rounds of each figure."""
    runs = {}
    for r in range(rounds):
        for n in levels:
            order = servers if r % 2 == 0 else servers[::-1]
            for label, url, model in order:
                res = level(url, model, n, max_tokens)
                res.update(label=label, round=r, load1=load_average())
                print(json.dumps(res), flush=True)
                runs.setdefault((label, n), []).append(res)
    med = {}
    for key, rs in runs.items():
        def m(field):
            xs = [x[field] for x in rs if x[field] is not None]
            return statistics.median(xs) if xs else None
        med[key] = {f: m(f) for f in ("ttft_median_s", "ttft_max_s", "tps_per_stream_mean",
                                        "aggregate_tps")}
        med[key]["ok"] = sum(x["ok"] for x in rs)
        med[key]["sent"] = len(rs) * key[1]
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True,
                    help="server base URL; repeat with --label to compare servers")
    ap.add_argument("--label", action="append", help="one per --url")
    ap.add_argument("--model", default="model")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternating rounds; figures are medians over rounds")
    args = ap.parse_args()
    labels = args.label or [f"server{i}" for i in range(len(args.url))]
    if len(labels) != len(args.url):
        ap.error("give one --label per --url")
    servers = [(lab, url, args.model) for lab, url in zip(labels, args.url)]
    levels = [int(x) for x in args.levels.split(",")]
    # Warm-up (first request pays page faults and lazy init).
    for _, url, model in servers:
        level(url, model, 1, 4)
    load0 = load_average()
    med = side_by_side(servers, levels, args.max_tokens, args.rounds)
    print(f"load average (1 min) at start {fmt(load0, 1)}, at end {fmt(load_average(), 1)}")
    print("| server | streams | ok | TTFT median (s) | TTFT max (s) | tok/s per stream | "
          "aggregate tok/s |")
    print("|---|---|---|---|---|---|---|")
    for n in levels:
        for lab in labels:
            r = med[(lab, n)]
            print(f"| {lab} | {n} | {r['ok']}/{r['sent']} | {fmt(r['ttft_median_s'])} | "
                  f"{fmt(r['ttft_max_s'])} | {fmt(r['tps_per_stream_mean'], 1)} | "
                  f"{fmt(r['aggregate_tps'], 1)} |")
    if len(labels) == 2:
        a, b = labels
        print()
        print(f"| streams | TTFT median {a}/{b} | tok/s per stream {a}/{b} | "
              f"aggregate tok/s {a}/{b} |")
        print("|---|---|---|---|")

        def ratio(n, f):
            x, y = med[(a, n)][f], med[(b, n)][f]
            return None if x is None or not y else x / y
        for n in levels:
            print(f"| {n} | {fmt(ratio(n, 'ttft_median_s'))} | "
                  f"{fmt(ratio(n, 'tps_per_stream_mean'))} | {fmt(ratio(n, 'aggregate_tps'))} |")


if __name__ == "__main__":
    main()
