#!/usr/bin/env python3
"""Load generator for OpenAI-compatible servers (ferrite serve, llama-cpp-python's server).

For each concurrency level N it opens N streaming chat requests at once and records, per stream,
the time to first token (first non-empty content delta) and the decode rate (content chunks
after the first / time from first to last). Standard library only, so it measures any server
the same way. Prints one JSON line per level and a markdown table row.

  python3 bench/peer_server_bench.py --url http://127.0.0.1:18080 --levels 1,4,16 --max-tokens 32
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
        "wall_s": wall,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="model")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--label", default="server")
    args = ap.parse_args()
    # Warm-up (first request pays page faults and lazy init).
    level(args.url, args.model, 1, 4)
    for n in [int(x) for x in args.levels.split(",")]:
        r = level(args.url, args.model, n, args.max_tokens)
        r["label"] = args.label
        print(json.dumps(r), flush=True)
        fmt = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
        print(f"| {args.label} | {n} | {r['ok']}/{n} | {fmt(r['ttft_median_s'])} | "
              f"{fmt(r['ttft_max_s'])} | {fmt(r['tps_per_stream_mean'], 1)} | "
              f"{fmt(r['aggregate_tps'], 1)} |", flush=True)


if __name__ == "__main__":
    main()
