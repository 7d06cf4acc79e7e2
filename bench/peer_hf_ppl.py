"""HF transformers side of `ferrite ppl`: chunked perplexity (consecutive chunks of CTX tokens
scored independently, targets 1..len-1 of each chunk) over the first N tokens of TEXT, with the
GGUF dequantised to f32 by transformers; prints ppl and scoring throughput (tokens/s, load and
tokenisation excluded). Developer machines only (needs ../shared/peers/setup.sh).
usage: python bench/peer_hf_ppl.py GGUF TEXT THREADS [CTX=512] [N=8192]"""
import json, math, os, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, text, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
n = int(sys.argv[5]) if len(sys.argv) > 5 else 8192
torch.set_num_threads(threads)
folder, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
ids = tok(open(text, encoding="utf-8").read(), add_special_tokens=False)["input_ids"][:n]
nll, count = 0.0, 0
t0 = time.perf_counter()
with torch.inference_mode():
    for start in range(0, len(ids), ctx):
        chunk = torch.tensor([ids[start:start + ctx]])
        if chunk.shape[1] < 2:
            break
        logp = torch.log_softmax(model(chunk).logits[0, :-1].float(), dim=-1)
        nll -= logp.gather(1, chunk[0, 1:, None]).sum().item()
        count += chunk.shape[1] - 1
elapsed = time.perf_counter() - t0
print(json.dumps({"engine": "transformers", "threads": threads, "ctx": ctx, "tokens": len(ids),
                  "predictions": count, "ppl": math.exp(nll / count), "seconds": elapsed,
                  "tokens_per_second": count / elapsed}))
