"""llama.cpp (llama-cpp-python) side of `ferrite bench`: same GGUF, same prompt tokens (ferrite's
tokenizer equals llama.cpp's on these texts), prompt processing of N tokens and decode of M
tokens, medians over R runs, peak RSS. Developer machines only (needs ../shared/peers/setup.sh).
usage: python bench/peer_llamacpp.py GGUF TEXT THREADS [N=512] [M=128] [R=3]"""
import json, resource, statistics, sys, time
import numpy as np
from llama_cpp import Llama

gguf, text, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 512
m = int(sys.argv[5]) if len(sys.argv) > 5 else 128
r = int(sys.argv[6]) if len(sys.argv) > 6 else 3
llm = Llama(gguf, n_ctx=n + m + 8, n_threads=threads, n_threads_batch=threads, n_batch=512,
            verbose=False, logits_all=False)
ids = llm.tokenize(open(text, encoding="utf-8").read().encode(), add_bos=False, special=False)[:n]
def last_argmax():
    # logits of the last evaluated token, read straight from the llama.cpp context
    return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).argmax())

pp, tg = [], []
for _ in range(r):
    llm.reset()
    t0 = time.perf_counter(); llm.eval(ids); pp.append(n / (time.perf_counter() - t0))
    nxt = last_argmax()
    t1 = time.perf_counter()
    for _ in range(m):
        llm.eval([nxt]); nxt = last_argmax()
    tg.append(m / (time.perf_counter() - t1))
print(json.dumps({"engine": "llama.cpp", "threads": threads, "prompt_tokens": n, "gen_tokens": m,
                  "prompt_tokens_per_second": statistics.median(pp),
                  "decode_tokens_per_second": statistics.median(tg),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
