#!/usr/bin/env python3
"""SmolLM2-135M (the GGUF fixture's weights) written as an ONNX decoder with a KV cache, in
the layout Hugging Face's exporters (torch.onnx through optimum) give a llama model:

    inputs   input_ids [batch_size, sequence_length] int64
             attention_mask [batch_size, past_sequence_length + sequence_length] int64
             position_ids [batch_size, sequence_length] int64
             past_key_values.N.key / .value [batch_size, 3, past_sequence_length, 64] f32
    outputs  logits [batch_size, sequence_length, 49152] f32
             present.N.key / .value [batch_size, 3, past_sequence_length + sequence_length, 64]

node for node as transformers' eager llama traces: RMSNorm as Pow, ReduceMean, Add, Sqrt,
Reciprocal, Mul, Mul(weight); rotary embeddings from inv_freq @ position_ids (MatMul,
Transpose, Concat, Cos, Sin) and rotate_half (Slice, Neg, Concat); the cache as Concat(past,
new) on axis 2; repeat_kv as Unsqueeze, Expand, Reshape; attention as MatMul, Mul(scaling),
Add(causal mask), Softmax, MatMul; SiLU as Sigmoid, Mul; shapes through Shape -> Gather ->
Unsqueeze -> Concat chains; the 4D causal mask from attention_mask with Range, LessOrEqual,
And, Where(0, float32 min). Weights are the GGUF's dequantized to float32 (optimum exports
float32), q/k rows un-permuted from llama.cpp's adjacent-pair RoPE order back to Hugging
Face's halves.

Pins: python 3.11, gguf==0.17.1, numpy==2.4.6, onnx==1.22.0, protobuf==7.36.2
(+ pyyaml, tqdm for gguf; ml_dtypes, typing_extensions for onnx).

    python scripts/derive_smollm2_onnx.py --src SmolLM2-135M-Instruct.Q4_1.gguf --out DIR [--layout split]

writes DIR/model.onnx (+ model.onnx.data: the weights as external data), config.json,
generation_config.json and tokenizer.json (the GGUF's byte-level BPE with SmolLM2's
pre-tokenizer: digits one by one, then GPT-2's byte-level split; control tokens as special
added tokens).

--layout split writes the split-graph runtime's structure instead: DIR/embed.onnx (input_ids
-> inputs_embeds, the embedding Gather alone) and DIR/decoder.onnx (the same decoder taking
inputs_embeds [batch_size, sequence_length, 576] in place of input_ids), each with its
external data.
"""
import argparse
import json
import os

import numpy as np
import onnx
from gguf import GGUFReader
from gguf.quants import dequantize
from onnx import TensorProto, helper, numpy_helper

F32_MIN = float(np.finfo(np.float32).min)


def field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.used = [], [], set()

    def unique(self, base, op):
        # torch.onnx's names: /scope/Op, then /scope/Op_1, /scope/Op_2, ...
        name, k = f"/{base}/{op}", 0
        while name in self.used:
            k += 1
            name = f"/{base}/{op}_{k}"
        self.used.add(name)
        return name

    def op(self, op, inputs, base, outputs=1, **attrs):
        name = self.unique(base, op)
        outs = [f"{name}_output_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, base):
        name = self.unique(base, "Constant")
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(
            "Constant", [], [out], name=name, value=numpy_helper.from_array(np.asarray(value))))
        return out

    def weight(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def dim(self, x, axis, base):
        """Shape(x)[axis] as a [1] int64 (Shape -> Gather -> Unsqueeze), as torch traces."""
        s = self.op("Shape", [x], base)
        g = self.op("Gather", [s, self.const(np.int64(axis), base)], base, axis=0)
        return self.op("Unsqueeze", [g, self.const(np.array([0], np.int64), base)], base)


def unpermute(w, heads):
    # llama.cpp's convert permutes q/k rows for adjacent-pair RoPE:
    # w.reshape(heads, 2, hd/2, in).swapaxes(1, 2); this is its inverse.
    out, inp = w.shape
    return w.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def rms_norm(g, x, weight, eps, base):
    p = g.op("Pow", [x, g.const(np.float32(2.0), base)], base)
    m = g.op("ReduceMean", [p, g.const(np.array([-1], np.int64), base)], base, keepdims=1)
    a = g.op("Add", [m, g.const(np.float32(eps), base)], base)
    s = g.op("Sqrt", [a], base)
    r = g.op("Reciprocal", [s], base)
    y = g.op("Mul", [x, r], base)
    return g.op("Mul", [weight, y], base)


def rotate_half(g, x, half, base):
    a = g.op("Slice", [x, g.const(np.array([0], np.int64), base),
                       g.const(np.array([half], np.int64), base),
                       g.const(np.array([-1], np.int64), base),
                       g.const(np.array([1], np.int64), base)], base)
    b = g.op("Slice", [x, g.const(np.array([half], np.int64), base),
                       g.const(np.array([np.iinfo(np.int64).max], np.int64), base),
                       g.const(np.array([-1], np.int64), base),
                       g.const(np.array([1], np.int64), base)], base)
    n = g.op("Neg", [b], base)
    return g.op("Concat", [n, a], base, axis=-1)


def embed_graph(src):
    """The embedding alone: input_ids -> inputs_embeds (a split graph's first model)."""
    r = GGUFReader(src)
    t = {x.name: x for x in r.tensors}
    x = t["token_embd.weight"]
    table = dequantize(x.data, x.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(x.shape)])
    g = Graph()
    g.weight("model.embed_tokens.weight", table)
    g.nodes.append(helper.make_node("Gather", ["model.embed_tokens.weight", "input_ids"], ["inputs_embeds"],
                                    name=g.unique("model/embed_tokens", "Gather"), axis=0))
    B, S = "batch_size", "sequence_length"
    graph = helper.make_graph(
        g.nodes, "main_graph",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, S])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, [B, S, table.shape[1]])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="pytorch", producer_version="2.5.1")
    model.ir_version = 8
    return model


def build(src, split=False):
    r = GGUFReader(src)
    t = {x.name: x for x in r.tensors}

    def w(name):
        x = t[name]
        return dequantize(x.data, x.tensor_type).astype(np.float32).reshape(
            [int(d) for d in reversed(x.shape)])

    layers = int(field(r, "llama.block_count"))
    width = int(field(r, "llama.embedding_length"))
    heads = int(field(r, "llama.attention.head_count"))
    kv = int(field(r, "llama.attention.head_count_kv"))
    hd = width // heads
    eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
    base_freq = float(field(r, "llama.rope.freq_base"))
    vocab = int(field(r, "llama.vocab_size"))

    g = Graph()
    if not split:
        g.weight("model.embed_tokens.weight", w("token_embd.weight"))
    inv_freq = (1.0 / base_freq ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd)).astype(np.float32)

    # Sizes, as traced: batch and length of the new tokens, past length from the cache.
    first = "inputs_embeds" if split else "input_ids"
    bsz = g.dim(first, 0, "model")
    seq = g.dim(first, 1, "model")
    past = g.dim("past_key_values.0.key", 2, "model")
    total = g.op("Add", [past, seq], "model")

    if split:
        h = "inputs_embeds"
    else:
        h = g.op("Gather", ["model.embed_tokens.weight", "input_ids"], "model/embed_tokens", axis=0)

    # The 4D causal mask: query i (absolute past + i) sees key j when j <= past + i and
    # attention_mask[j] is 1; else float32 min.
    sc = lambda v: g.const(np.int64(v), "model/mask")  # noqa: E731
    past_s = g.op("Squeeze", [past, g.const(np.array([0], np.int64), "model/mask")], "model/mask")
    total_s = g.op("Squeeze", [total, g.const(np.array([0], np.int64), "model/mask")], "model/mask")
    q_pos = g.op("Range", [past_s, total_s, sc(1)], "model/mask")
    k_pos = g.op("Range", [sc(0), total_s, sc(1)], "model/mask")
    k_row = g.op("Unsqueeze", [k_pos, g.const(np.array([0], np.int64), "model/mask")], "model/mask")
    q_col = g.op("Unsqueeze", [q_pos, g.const(np.array([1], np.int64), "model/mask")], "model/mask")
    causal = g.op("LessOrEqual", [k_row, q_col], "model/mask")
    am = g.op("Cast", ["attention_mask"], "model/mask", to=TensorProto.BOOL)
    am4 = g.op("Unsqueeze", [am, g.const(np.array([1, 2], np.int64), "model/mask")], "model/mask")
    allowed = g.op("And", [causal, am4], "model/mask")
    mask = g.op("Where", [allowed, g.const(np.float32(0.0), "model/mask"),
                          g.const(np.float32(F32_MIN), "model/mask")], "model/mask")

    # Rotary: inv_freq[None, :, None] @ position_ids[:, None, :], as LlamaRotaryEmbedding.
    rb = "model/rotary_emb"
    inv = g.weight("model.rotary_emb.inv_freq", inv_freq.reshape(1, -1, 1))
    expand_to = g.op("Concat", [bsz, g.const(np.array([1, 1], np.int64), rb)], rb, axis=0)
    inv_b = g.op("Expand", [inv, expand_to], rb)
    pos = g.op("Unsqueeze", ["position_ids", g.const(np.array([1], np.int64), rb)], rb)
    pos_f = g.op("Cast", [pos], rb, to=TensorProto.FLOAT)
    freqs = g.op("MatMul", [inv_b, pos_f], rb)
    freqs_t = g.op("Transpose", [freqs], rb, perm=[0, 2, 1])
    emb = g.op("Concat", [freqs_t, freqs_t], rb, axis=-1)
    cos = g.op("Unsqueeze", [g.op("Cos", [emb], rb), g.const(np.array([1], np.int64), rb)], rb)
    sin = g.op("Unsqueeze", [g.op("Sin", [emb], rb), g.const(np.array([1], np.int64), rb)], rb)

    scaling = np.float32(hd ** -0.5)
    outputs = []
    for i in range(layers):
        b = f"model/layers.{i}"
        p = f"model.layers.{i}"
        ln1 = g.weight(f"{p}.input_layernorm.weight", w(f"blk.{i}.attn_norm.weight"))
        x = rms_norm(g, h, ln1, eps, f"{b}/input_layernorm")
        wq = g.weight(f"{p}.self_attn.q_proj.weight_T", unpermute(w(f"blk.{i}.attn_q.weight"), heads).T)
        wk = g.weight(f"{p}.self_attn.k_proj.weight_T", unpermute(w(f"blk.{i}.attn_k.weight"), kv).T)
        wv = g.weight(f"{p}.self_attn.v_proj.weight_T", w(f"blk.{i}.attn_v.weight").T)
        wo = g.weight(f"{p}.self_attn.o_proj.weight_T", w(f"blk.{i}.attn_output.weight").T)
        a = f"{b}/self_attn"

        def heads_of(y, n, name):
            shape = g.op("Concat", [bsz, seq, g.const(np.array([-1, hd], np.int64), name)], name, axis=0)
            r4 = g.op("Reshape", [y, shape], name)
            return g.op("Transpose", [r4], name, perm=[0, 2, 1, 3])

        q = heads_of(g.op("MatMul", [x, wq], f"{a}/q_proj"), heads, f"{a}/q")
        k = heads_of(g.op("MatMul", [x, wk], f"{a}/k_proj"), kv, f"{a}/k")
        v = heads_of(g.op("MatMul", [x, wv], f"{a}/v_proj"), kv, f"{a}/v")
        q = g.op("Add", [g.op("Mul", [q, cos], a), g.op("Mul", [rotate_half(g, q, hd // 2, a), sin], a)], a)
        k = g.op("Add", [g.op("Mul", [k, cos], a), g.op("Mul", [rotate_half(g, k, hd // 2, a), sin], a)], a)
        pk = g.op("Concat", [f"past_key_values.{i}.key", k], a, axis=-2)
        pv = g.op("Concat", [f"past_key_values.{i}.value", v], a, axis=-2)
        g.nodes.append(helper.make_node("Identity", [pk], [f"present.{i}.key"], name=g.unique(a, "Identity")))
        g.nodes.append(helper.make_node("Identity", [pv], [f"present.{i}.value"], name=g.unique(a, "Identity")))
        outputs += [f"present.{i}.key", f"present.{i}.value"]

        def repeat_kv(y, name):
            u = g.op("Unsqueeze", [y, g.const(np.array([2], np.int64), name)], name)
            shape = g.op("Concat", [bsz, g.const(np.array([kv, heads // kv], np.int64), name), total,
                                    g.const(np.array([hd], np.int64), name)], name, axis=0)
            e = g.op("Expand", [u, shape], name)
            flat = g.op("Concat", [bsz, g.const(np.array([heads], np.int64), name), total,
                                   g.const(np.array([hd], np.int64), name)], name, axis=0)
            return g.op("Reshape", [e, flat], name)

        kr = repeat_kv(pk, f"{a}/repeat_kv_k")
        vr = repeat_kv(pv, f"{a}/repeat_kv_v")
        kt = g.op("Transpose", [kr], a, perm=[0, 1, 3, 2])
        s = g.op("Mul", [g.op("MatMul", [q, kt], a), g.const(scaling, a)], a)
        s = g.op("Add", [s, mask], a)
        pr = g.op("Softmax", [s], a, axis=-1)
        o = g.op("MatMul", [pr, vr], a)
        o = g.op("Transpose", [o], a, perm=[0, 2, 1, 3])
        oshape = g.op("Concat", [bsz, seq, g.const(np.array([-1], np.int64), a)], a, axis=0)
        o = g.op("Reshape", [o, oshape], a)
        h = g.op("Add", [h, g.op("MatMul", [o, wo], f"{a}/o_proj")], b)

        ln2 = g.weight(f"{p}.post_attention_layernorm.weight", w(f"blk.{i}.ffn_norm.weight"))
        x = rms_norm(g, h, ln2, eps, f"{b}/post_attention_layernorm")
        m = f"{b}/mlp"
        wg = g.weight(f"{p}.mlp.gate_proj.weight_T", w(f"blk.{i}.ffn_gate.weight").T)
        wu = g.weight(f"{p}.mlp.up_proj.weight_T", w(f"blk.{i}.ffn_up.weight").T)
        wd = g.weight(f"{p}.mlp.down_proj.weight_T", w(f"blk.{i}.ffn_down.weight").T)
        gate = g.op("MatMul", [x, wg], f"{m}/gate_proj")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{m}/act_fn")], f"{m}/act_fn")
        up = g.op("MatMul", [x, wu], f"{m}/up_proj")
        d = g.op("MatMul", [g.op("Mul", [act, up], m), wd], f"{m}/down_proj")
        h = g.op("Add", [h, d], b)

    lnf = g.weight("model.norm.weight", w("output_norm.weight"))
    x = rms_norm(g, h, lnf, eps, "model/norm")
    head = w("output.weight") if "output.weight" in t else w("token_embd.weight")
    lm = g.weight("lm_head.weight_T", head.T)
    g.nodes.append(helper.make_node("MatMul", [x, lm], ["logits"], name=g.unique("lm_head", "MatMul")))

    B, S, P = "batch_size", "sequence_length", "past_sequence_length"
    T = "past_sequence_length + sequence_length"
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, [B, S, width]) if split
        else helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, S]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, T]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [B, S]),
    ]
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", TensorProto.FLOAT, [B, kv, P, hd]))
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [B, S, vocab])]
    for o in outputs:
        outs.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, [B, kv, T, hd]))
    graph = helper.make_graph(g.nodes, "main_graph", inputs, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="pytorch", producer_version="2.5.1")
    model.ir_version = 8
    return r, model, dict(layers=layers, width=width, heads=heads, kv=kv, hd=hd, eps=eps,
                          base=base_freq, vocab=vocab)


def tokenizer_json(r):
    tokens = list(field(r, "tokenizer.ggml.tokens"))
    types = list(field(r, "tokenizer.ggml.token_type"))
    merges = list(field(r, "tokenizer.ggml.merges"))
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (tok, ty) in enumerate(zip(tokens, types)) if ty == 3]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in merges]},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layout", choices=["optimum", "split"], default="optimum")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    split = a.layout == "split"
    r, model, c = build(a.src, split)
    graphs = [("decoder.onnx", model), ("embed.onnx", embed_graph(a.src))] if split else [("model.onnx", model)]
    for name, m in graphs:
        onnx.checker.check_model(m, full_check=False) if m.ByteSize() < 2**31 else None
        # onnx appends to an existing data file: start from none.
        for f in (name, name + ".data"):
            if os.path.exists(os.path.join(a.out, f)):
                os.remove(os.path.join(a.out, f))
        onnx.save_model(m, os.path.join(a.out, name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=name + ".data", size_threshold=1024)
    bos = int(field(r, "tokenizer.ggml.bos_token_id"))
    eos = int(field(r, "tokenizer.ggml.eos_token_id"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": c["width"], "num_hidden_layers": c["layers"],
              "num_attention_heads": c["heads"], "num_key_value_heads": c["kv"],
              "head_dim": c["hd"], "rms_norm_eps": c["eps"], "rope_theta": c["base"],
              "vocab_size": c["vocab"], "bos_token_id": bos, "eos_token_id": eos,
              "tie_word_embeddings": True, "torch_dtype": "float32",
              "m2w_derived_from": os.path.basename(a.src)}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos}, f, indent=2)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(r), f, ensure_ascii=False)


if __name__ == "__main__":
    main()
