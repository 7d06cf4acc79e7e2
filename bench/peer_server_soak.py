#!/usr/bin/env python3
"""Soak test of a running `ferrite serve`: clients connect and disconnect for DURATION seconds.

Each client thread loops over a random mix: a full non-streaming chat, a full stream, a stream
abandoned after a few chunks (client disconnect), a session turn on a `sink:` cache (the
conversation grows far past the context), and a bad request. Every answer must be a 200 with a
well-formed body, or a 4xx/5xx with an OpenAI error body; anything else (a transport error, a
malformed body, a dead server) is a failure. The server's RSS is sampled from /proc every
5 seconds. Ends by itself; prints a JSON summary; exits 1 on any failure.

  python3 bench/peer_server_soak.py --url http://127.0.0.1:18090 --pid PID --duration 1800
"""

import argparse
import http.client
import json
import random
import threading
import time
import urllib.parse

counts = {}
failures = []
lock = threading.Lock()


def tally(key):
    with lock:
        counts[key] = counts.get(key, 0) + 1


def fail(msg):
    with lock:
        failures.append(msg)


def request(u, body, stream=False):
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def check_error(status, raw, what):
    try:
        e = json.loads(raw)["error"]
        assert isinstance(e["message"], str) and "type" in e and "param" in e and "code" in e
    except Exception:
        fail(f"{what}: status {status} without an OpenAI error body: {raw[:200]!r}")
        return
    tally(f"{what}:{status}")


def chat_body(rng, **extra):
    b = {"model": "m", "messages": [{"role": "user", "content": rng.choice(
        ["Tell me a joke.", "What is a cat?", "Count to ten.", "Write a haiku about rust."])}],
        "max_tokens": rng.choice([8, 16, 32]), "temperature": 0.7, "seed": rng.randrange(1 << 30)}
    b.update(extra)
    return b


def client(u, deadline, seed):
    rng = random.Random(seed)
    session = f"soak-{seed}"
    while time.time() < deadline:
        kind = rng.choice(["chat", "stream", "abandon", "session", "session", "bad"])
        try:
            if kind == "chat":
                conn, r = request(u, chat_body(rng))
                raw = r.read()
                if r.status == 200:
                    j = json.loads(raw)
                    assert j["choices"][0]["message"]["content"] is not None
                    assert j["usage"]["total_tokens"] > 0
                    tally("chat:200")
                else:
                    check_error(r.status, raw, "chat")
                conn.close()
            elif kind in ("stream", "abandon"):
                conn, r = request(u, chat_body(rng, stream=True, max_tokens=64), stream=True)
                if r.status != 200:
                    check_error(r.status, r.read(), kind)
                    conn.close()
                    continue
                n, done = 0, False
                stop_after = rng.randint(1, 4) if kind == "abandon" else 10 ** 9
                for raw in r:
                    line = raw.decode().strip()
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    json.loads(line[6:])
                    n += 1
                    if n >= stop_after:
                        break
                conn.close()  # abandon: the server must cancel and free the cache
                if kind == "stream" and not done:
                    fail("stream ended without [DONE]")
                tally(f"{kind}:200")
            elif kind == "session":
                conn, r = request(u, chat_body(rng, session=session, kv="sink:4+252"))
                raw = r.read()
                if r.status == 200:
                    j = json.loads(raw)
                    assert j["ferrite"]["cache_tokens"] <= 256
                    tally("session:200")
                else:
                    check_error(r.status, raw, "session")
                conn.close()
            else:
                body = rng.choice([b"{not json", b'{"messages": []}',
                                   b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
                                   b'{"messages": [{"role": "user", "content": "x"}], "kv": "bogus"}'])
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                raw = r.read()
                if r.status != 400:
                    fail(f"bad request got {r.status}")
                check_error(r.status, raw, "bad")
                conn.close()
        except Exception as e:  # transport errors, malformed JSON, failed assertions
            fail(f"{kind}: {type(e).__name__}: {e}")
            time.sleep(1)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--clients", type=int, default=6)
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    t0 = time.time()
    deadline = t0 + args.duration
    threads = [threading.Thread(target=client, args=(u, deadline, i), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    rss = []
    while time.time() < deadline:
        try:
            rss.append((round(time.time() - t0), rss_kib(args.pid)))
        except FileNotFoundError:
            fail("the server process died")
            break
        print(json.dumps({"t": rss[-1][0], "rss_kib": rss[-1][1], "counts": counts,
                          "failures": len(failures)}), flush=True)
        time.sleep(5)
    for t in threads:
        t.join(timeout=330)
    values = [r for _, r in rss if r]
    warm = values[len(values) // 10:] or values
    summary = {
        "duration_s": round(time.time() - t0),
        "requests": sum(counts.values()),
        "counts": counts,
        "failures": failures[:20],
        "n_failures": len(failures),
        "rss_kib_first": values[0] if values else None,
        "rss_kib_after_warmup_min": min(warm) if warm else None,
        "rss_kib_after_warmup_max": max(warm) if warm else None,
        "rss_kib_last": values[-1] if values else None,
    }
    print("SUMMARY " + json.dumps(summary), flush=True)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
