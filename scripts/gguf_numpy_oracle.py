#!/usr/bin/env python3
"""An oracle for m2w's GGUF decoder path that shares no code with it: the PyPI `gguf`
reader and its dequantizer, a plain numpy forward pass, SentencePiece's own BPE encoder over
the file's vocabulary, and jinja2 rendering the chat templates m2w keeps.

Pins: python 3.11, gguf==0.17.1, numpy==2.4.6, sentencepiece==0.2.3, protobuf==7.36.2,
jinja2==3.1.6, markupsafe==3.0.4 (+ pyyaml, tqdm for gguf).

    python scripts/gguf_numpy_oracle.py --src MODEL.gguf --out DIR

writes into DIR:
- oracle.json: the prompt's ids (SentencePiece), the logits of its last position for the 32
  most likely tokens, and 16 greedy tokens, from numpy's forward pass (float32 matmuls:
  BLAS-dependent in the last bits, so the file's sha256 is CPU-dependent);
- tokenizer-cases.json: [{text, ids}] for 320 texts (hand-picked edge cases and seeded
  mixtures), SentencePiece with the control tokens of the vocabulary kept whole;
- chat-cases.json: [{template, messages, add_generation_prompt, text}] rendered by jinja2
  with Hugging Face's settings (trim_blocks, lstrip_blocks, raise_exception) from
  ../templates/chat/*.jinja.

The forward pass reads the family from general.architecture and does what the published
model does: llama (adjacent-pair RoPE; Llama 3.x's rope_freqs factors when present), qwen2 (q/k/v biases, NEOX RoPE), qwen3 (QK-norm),
gemma3 (embedding times sqrt(width), QK-norm, post-attention and post-FFN norms, GELU-tanh
gate, every sixth layer global and the others within attention.sliding_window with RoPE
base 10000, queries scaled by head_dim^-0.5).
"""
import argparse
import json
import os
import random

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Weights:
    def __init__(self, reader):
        self.t = {t.name: t for t in reader.tensors}

    def has(self, name):
        return name in self.t

    def __call__(self, name):
        t = self.t[name]
        shape = [int(x) for x in reversed(t.shape)]
        return dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)


def rms(x, w, eps):
    x = x.astype(np.float32)
    return (x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(eps))) * w


def rope(x, pos, base, dims, neox, freqs=None):
    # x: [T, H, hd]; freqs: Llama 3.x's per-pair factors (rope_freqs.weight) or None
    half = dims // 2
    i = np.arange(half, dtype=np.float32)
    inv = np.power(np.float32(base), -2.0 * i / np.float32(dims)).astype(np.float32)
    if freqs is not None:
        inv = inv / freqs.reshape(-1)[:half]
    ang = pos[:, None].astype(np.float32) * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    y = x.copy()
    if neox:
        a, b = x[..., :half], x[..., half:dims]
        y[..., :half] = a * c - b * s
        y[..., half:dims] = a * s + b * c
    else:
        a, b = x[..., 0:dims:2], x[..., 1:dims:2]
        y[..., 0:dims:2] = a * c - b * s
        y[..., 1:dims:2] = a * s + b * c
    return y


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        self.arch = arch = field(r, "general.architecture")
        g = lambda k, d=None: field(r, f"{arch}.{k}", d)
        self.layers = int(g("block_count"))
        self.dim = int(g("embedding_length"))
        self.heads = int(g("attention.head_count"))
        self.kv_heads = int(g("attention.head_count_kv", self.heads))
        self.head_dim = int(g("attention.key_length", self.dim // self.heads))
        self.eps = float(g("attention.layer_norm_rms_epsilon", 1e-5))
        self.base = float(g("rope.freq_base", 10000.0))
        self.rope_dims = int(g("rope.dimension_count", self.head_dim))
        self.neox = arch in ("qwen2", "qwen3", "gemma3")
        self.gemma = arch == "gemma3"
        window = int(g("attention.sliding_window", 0) or 0)
        self.window = [0] * self.layers
        self.layer_base = [self.base] * self.layers
        if self.gemma and window:
            for l in range(self.layers):
                if (l + 1) % 6 != 0:
                    self.window[l] = window
                    self.layer_base[l] = 10000.0
        self.w = Weights(r)
        self.emb = self.w("token_embd.weight")
        self.head = self.w("output.weight") if self.w.has("output.weight") else self.emb
        self.blocks = []
        for l in range(self.layers):
            p = f"blk.{l}."
            get = lambda n: self.w(p + n) if self.w.has(p + n) else None
            self.blocks.append({n: get(n) for n in [
                "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                "attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_q_norm.weight",
                "attn_k_norm.weight", "attn_output.weight", "post_attention_norm.weight",
                "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
                "post_ffw_norm.weight"]})
        self.out_norm = self.w("output_norm.weight")
        self.freqs = self.w("rope_freqs.weight") if self.w.has("rope_freqs.weight") else None
        self.tokens = field(r, "tokenizer.ggml.tokens")
        self.scores = field(r, "tokenizer.ggml.scores")
        self.types = field(r, "tokenizer.ggml.token_type")
        self.bos = field(r, "tokenizer.ggml.bos_token_id")
        self.add_bos = bool(field(r, "tokenizer.ggml.add_bos_token", False))
        self.unk = field(r, "tokenizer.ggml.unknown_token_id")
        self.add_space_prefix = bool(field(r, "tokenizer.ggml.add_space_prefix", True))

    def last_logits(self, ids):
        T = len(ids)
        x = self.emb[np.array(ids)]
        if self.gemma:
            x = x * np.float32(np.sqrt(self.dim))
        pos = np.arange(T)
        H, KV, hd = self.heads, self.kv_heads, self.head_dim
        scale = np.float32(hd ** -0.5)
        for l, b in enumerate(self.blocks):
            h = rms(x, b["attn_norm.weight"], self.eps)
            q = h @ b["attn_q.weight"].T
            k = h @ b["attn_k.weight"].T
            v = h @ b["attn_v.weight"].T
            if b["attn_q.bias"] is not None:
                q, k, v = q + b["attn_q.bias"], k + b["attn_k.bias"], v + b["attn_v.bias"]
            q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
            if b["attn_q_norm.weight"] is not None:
                q = rms(q, b["attn_q_norm.weight"], self.eps)
                k = rms(k, b["attn_k_norm.weight"], self.eps)
            q = rope(q, pos, self.layer_base[l], self.rope_dims, self.neox, self.freqs)
            k = rope(k, pos, self.layer_base[l], self.rope_dims, self.neox, self.freqs)
            mask = pos[None, :] > pos[:, None]
            if self.window[l]:
                mask |= pos[None, :] <= pos[:, None] - self.window[l]
            out = np.zeros((T, H, hd), np.float32)
            for hh in range(H):
                kv = hh // (H // KV)
                s = (q[:, hh, :] @ k[:, kv, :].T) * scale
                s = np.where(mask, -np.inf, s)
                s = s - s.max(-1, keepdims=True)
                e = np.exp(s)
                out[:, hh, :] = (e / e.sum(-1, keepdims=True)) @ v[:, kv, :]
            o = out.reshape(T, H * hd) @ b["attn_output.weight"].T
            if b["post_attention_norm.weight"] is not None:
                o = rms(o, b["post_attention_norm.weight"], self.eps)
            x = x + o
            h = rms(x, b["ffn_norm.weight"], self.eps)
            gate, up = h @ b["ffn_gate.weight"].T, h @ b["ffn_up.weight"].T
            if self.gemma:
                act = 0.5 * gate * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (gate + np.float32(0.044715) * gate ** 3)))
            else:
                act = gate / (1 + np.exp(-gate))
            d = (act * up) @ b["ffn_down.weight"].T
            if b["post_ffw_norm.weight"] is not None:
                d = rms(d, b["post_ffw_norm.weight"], self.eps)
            x = x + d
        h = rms(x[-1:], self.out_norm, self.eps)
        return (h @ self.head.T)[0]


def sentencepiece_of(m):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    for i, (piece, score, ty) in enumerate(zip(m.tokens, m.scores, m.types)):
        p = proto.pieces.add()
        p.piece = piece
        p.score = float(score)
        # SentencePiece wants exactly one UNKNOWN piece; GGUFs may mark it as control.
        p.type = 2 if i == m.unk else int(ty)
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id = int(m.unk)
    proto.trainer_spec.bos_id = -1
    proto.trainer_spec.eos_id = -1
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = m.add_space_prefix
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    controls = sorted(
        ((t, i) for i, (t, ty) in enumerate(zip(m.tokens, m.types)) if ty == 3 and t),
        key=lambda p: (-len(p[0]), p[1]))

    def encode(text):
        ids, rest = [], text
        while rest:
            best = None
            for t, i in controls:
                at = rest.find(t)
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, t, i)
            seg, after = (rest, "") if best is None else (rest[:best[0]], rest[best[0] + len(best[1]):])
            if seg:
                ids += sp.encode(seg)
            if best is not None:
                ids.append(best[2])
            rest = after
        return ids

    return encode


PICKED = [
    "The capital of France is", "Hello, world!", " leading space", "trailing space ",
    "two  spaces   three    four", "tab\tseparated\tvalues", "line one\nline two\n\nline four",
    "windows\r\nline\r\nends", "   ", "\n", "\n\n\n", " \n \n", "a",
    "It's, they're, we've, I'm, you'll", "1234567890", "3.14159 and 2,718 and -42",
    "#include <stdio.h>\nint main(void) { return 0; }", "def f(x):\n    return x ** 2  # square\n",
    "https://example.com/path?q=1&r=two#frag", "café naïve résumé façade",
    "e\u0301 combining acute", "Straße, Œuvre, ﬁ ligature", "你好，世界！", "日本語のテキストです。",
    "한국어 문장입니다.", "Привет, как дела?", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "emoji 😀 👍🏽 🇫🇷 ❤️", "family 👨\u200d👩\u200d👧\u200d👦 zwj", "zero\u200bwidth and\u00a0nbsp",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nhi<end_of_turn>", "text<end_of_turn>more<eos>", "<start_of_turn",
    "   indented\n\tand tabbed\n", "control \u0007 bell and \u001b[0m escape", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\U0010ffff last code point", "<0x41> not a byte", "▁ literal lower one eighth block",
]
PIECES = ["the", " quick", " brown", " fox", "'s", " 42", "7", "2026", " ", "  ", "\n", "\t",
          ",", ".", "!?", " café", "日本", "😀", " Привет", "ß", "<start_of_turn>", "<end_of_turn>",
          "x", " y", "_z", "(", ")", " //", " ==", "é", " 你好", "\r\n", "'", " don't", "-", "٣",
          "🇫🇷", "abc", " DEF", "\n\n", "    "]


def texts(n):
    rng = random.Random(20261130)
    out = list(PICKED)
    while len(out) < n:
        out.append("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))))
    return out[:n]


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "  What is the capital of France?  \n"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Bonjour"}, {"role": "user", "content": "Thanks\n"}],
    [{"role": "user", "content": [{"type": "text", "text": " parts "}, {"type": "text", "text": "two"}]}],
]


def chat_cases():
    import jinja2

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    cases = []
    folder = os.path.join(HERE, "..", "templates", "chat")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            template = env.from_string(f.read())
        for messages in CONVERSATIONS:
            for gen in (True, False):
                text = template.render(messages=messages, add_generation_prompt=gen,
                                       bos_token="<bos>", eos_token="<eos>")
                cases.append({"template": name, "messages": messages,
                              "add_generation_prompt": gen, "text": text})
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    m = Model(a.src)
    encode = sentencepiece_of(m)
    prompt = "The capital of France is"
    ids = ([int(m.bos)] if m.add_bos else []) + encode(prompt)
    logits = m.last_logits(ids)
    top = np.argsort(-logits, kind="stable")[:32]
    greedy, seq = [], list(ids)
    for _ in range(16):
        nxt = int(np.argmax(m.last_logits(seq))) if greedy else int(top[0])
        greedy.append(nxt)
        seq.append(nxt)
    oracle = {"prompt": prompt, "prompt_ids": ids,
              "last_logits": [[int(i), float(logits[i])] for i in top], "greedy": greedy}
    with open(os.path.join(a.out, "oracle.json"), "w") as f:
        json.dump(oracle, f, indent=1)
    cases = [{"text": t, "ids": encode(t)} for t in texts(320)]
    with open(os.path.join(a.out, "tokenizer-cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
    with open(os.path.join(a.out, "chat-cases.json"), "w", encoding="utf-8") as f:
        json.dump(chat_cases(), f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
