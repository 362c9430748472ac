"""Peer for bench-llm: the same GGUF llama forward in PyTorch (fp32, CUDA, eager), weights
dequantized from the same file with the gguf package, KV cache, greedy decode with one
argmax read back per token (as m2w does). Usage: torch_llama.py MODEL.gguf PROMPT NEW"""
import json
import sys
import time

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

path, prompt_len, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = GGUFReader(path)
f = {k: v for k, v in r.fields.items()}
def val(k):
    v = f[k]
    return v.parts[v.data[0]][0]
L, D, H, KVH = int(val("llama.block_count")), int(val("llama.embedding_length")), int(val("llama.attention.head_count")), int(val("llama.attention.head_count_kv"))
EPS, BASE = float(val("llama.attention.layer_norm_rms_epsilon")), float(val("llama.rope.freq_base"))
HD = D // H
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
W = {}
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
    W[t.name] = torch.tensor(np.ascontiguousarray(a), dtype=torch.float32, device=dev)
emb = W["token_embd.weight"]
head = W.get("output.weight", emb)
inv = BASE ** (-torch.arange(0, HD, 2, device=dev, dtype=torch.float32) / HD)

def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w

def rope(x, pos):  # x [T, heads, HD], pairs (2i, 2i+1)
    ang = pos[:, None].float() * inv[None, :]
    c, s = ang.cos()[:, None, :], ang.sin()[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)

def forward(ids, cache, start):
    T = ids.shape[0]
    x = emb[ids]
    pos = torch.arange(start, start + T, device=dev)
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).view(T, H, HD), pos)
        k = rope((h @ W[p + "attn_k.weight"].T).view(T, KVH, HD), pos)
        v = (h @ W[p + "attn_v.weight"].T).view(T, KVH, HD)
        if cache[l] is not None:
            k = torch.cat([cache[l][0], k]); v = torch.cat([cache[l][1], v])
        cache[l] = (k, v)
        kk = k.repeat_interleave(H // KVH, 1).transpose(0, 1)
        vv = v.repeat_interleave(H // KVH, 1).transpose(0, 1)
        att = (q.transpose(0, 1) @ kk.transpose(1, 2)) / HD ** 0.5
        n = kk.shape[1]
        mask = torch.ones(T, n, device=dev, dtype=torch.bool).tril(n - T)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (att @ vv).transpose(0, 1).reshape(T, D)
        x = x + o @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        x = x + (torch.nn.functional.silu(h @ W[p + "ffn_gate.weight"].T) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    return rms(x, W["output_norm.weight"]) @ head.T

prompt = torch.tensor([1] + [504 + (i * 37) % 3000 for i in range(1, prompt_len)], device=dev)
res = []
with torch.no_grad():
    for rep in range(4):
        cache = [None] * L
        (torch.cuda.synchronize() if dev.type == "cuda" else None); t = time.perf_counter()
        nxt = int(forward(prompt, cache, 0)[-1].argmax())
        (torch.cuda.synchronize() if dev.type == "cuda" else None); pre = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(new):
            nxt = int(forward(torch.tensor([nxt], device=dev), cache, prompt_len + k)[-1].argmax())
        dt = time.perf_counter() - t
        print(f"torch rep {rep}: prefill {prompt_len} tokens {pre*1e3:.2f} ms, decode {new} tokens {new/dt:.1f} tok/s", flush=True)
        if rep > 0:
            res.append((pre * 1e3, new / dt))
pm = sorted(x[0] for x in res)[len(res) // 2]; dm = sorted(x[1] for x in res)[len(res) // 2]
print(f"TORCH torch {torch.__version__} fp32 eager prefill_ms={pm:.2f} prefill_tok_s={prompt_len*1e3/pm:.0f} decode_tok_s={dm:.1f} peak_mem_mib={(torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0)/2**20:.0f}")
