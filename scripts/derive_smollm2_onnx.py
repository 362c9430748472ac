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
generation_config.json, tokenizer_config.json (the GGUF's chat template) and tokenizer.json
(the GGUF's byte-level BPE with SmolLM2's
pre-tokenizer: digits one by one, then GPT-2's byte-level split; control tokens as special
added tokens).

--layout genai writes DIR/model.onnx in the layout onnxruntime-genai's model builder gives an
INT4 llama for the CPU and WebGPU execution providers (fp32 io): no position_ids; seqlens_k and
total_sequence_length from attention_mask (ReduceSum, Sub, Cast; Shape, Gather, Cast); per
layer SimplifiedLayerNormalization (first) or com.microsoft SkipSimplifiedLayerNormalization
(residual from output 3), one packed q|k|v MatMulNBits, com.microsoft GroupQueryAttention with
do_rotary=1 over cos_cache/sin_cache [context, 32], MatMulNBits o/gate/up/down with SiLU as
Sigmoid, Mul; the final SkipSimplifiedLayerNormalization and a MatMulNBits lm_head; the tied
embedding as GatherBlockQuantized over the lm_head's 4-bit weight (shared_embeddings, the
builder's default for tied models since v0.15). Every MatMul weight is quantized as ONNX
Runtime's MatMul4BitsQuantizer does by default (MLAS, symmetric, block 32, zero point 8:
scale = -(the block's signed extreme)/8, q = clamp(roundf(w/scale + 8), 0, 15)) from the GGUF's
dequantized weights; accuracy_level 0 (see ACCURACY_LEVEL).

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
# MatMulNBits' accuracy_level: 0 as seed 002's MatMul4BitsQuantizer writes it (float compute).
# The genai builder writes 4 for CPU and WebGPU, which lets ONNX Runtime's CPU kernel quantize
# the activations to int8 per block: a different computation from the one the weights define.
ACCURACY_LEVEL = 0


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


def roundf(x):
    """C's roundf: halves away from zero (numpy rounds them to even)."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def quantize_q4(w, block=32):
    """W [K, N] (y = x @ W) as MatMulNBits' B [N, K/block, block/2] uint8 (even k in the low
    nibble) and scales [N * K/block] f32, symmetric as MLAS quantizes (zero point 8)."""
    k, n = w.shape
    assert k % block == 0
    blocks = w.T.reshape(n, k // block, block).astype(np.float32)
    mn, mx = blocks.min(axis=2), blocks.max(axis=2)
    m = np.where(np.abs(mx) > np.abs(mn), mx, mn)
    scale = (-m / np.float32(8)).astype(np.float32)
    inv = np.where(scale != 0, np.float32(1) / np.where(scale != 0, scale, 1), 0).astype(np.float32)
    q = np.clip(roundf(blocks * inv[:, :, None] + np.float32(8)), 0, 15).astype(np.uint8)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    return packed, scale.reshape(-1)


def open_gguf(src):
    """The GGUF reader, its tensors by name, a reader of one tensor dequantized to float32
    in numpy's (row-major) shape, and the llama hyper-parameters."""
    r = GGUFReader(src)
    t = {x.name: x for x in r.tensors}

    def w(name):
        x = t[name]
        return dequantize(x.data, x.tensor_type).astype(np.float32).reshape(
            [int(d) for d in reversed(x.shape)])

    width = int(field(r, "llama.embedding_length"))
    heads = int(field(r, "llama.attention.head_count"))
    hp = dict(layers=int(field(r, "llama.block_count")), width=width, heads=heads,
              kv=int(field(r, "llama.attention.head_count_kv")), hd=width // heads,
              eps=float(field(r, "llama.attention.layer_norm_rms_epsilon")),
              base=float(field(r, "llama.rope.freq_base")),
              vocab=int(field(r, "llama.vocab_size")),
              context=int(field(r, "llama.context_length")))
    return r, t, w, hp


def build_genai(src):
    r, t, w, hp = open_gguf(src)
    layers, width, heads, kv, hd = hp["layers"], hp["width"], hp["heads"], hp["kv"], hp["hd"]
    eps, theta, vocab, context = hp["eps"], hp["base"], hp["vocab"], hp["context"]
    nodes, inits = [], []
    consts = {}

    def node(op, name, inputs, outputs, domain=None, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0]

    def const(dtype, value):
        # The builder's constants: Constant nodes named /model/constant_nodes/{DTYPE}/{value}.
        key = f"{dtype}/{value}"
        if key not in consts:
            out = f"/model/constants/{key}"
            np_t = {"INT64": np.int64, "INT32": np.int32}[dtype]
            node("Constant", f"/model/constant_nodes/{key}", [], [out],
                 value=numpy_helper.from_array(np.array(value, np_t)))
            consts[key] = out
        return consts[key]

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def matmul_q4(name, x, w_kn, weight):
        k, n = w_kn.shape
        b, sc = quantize_q4(w_kn)
        out = f"{name}/MatMul/output_0"
        node("MatMulNBits", f"{name}/MatMul_Q4",
             [x, init(f"{weight}.MatMul.weight_Q4", b), init(f"{weight}.MatMul.weight_scales", sc)],
             [out], domain="com.microsoft", K=k, N=n, bits=4, block_size=32, accuracy_level=ACCURACY_LEVEL)
        return out

    # seqlens_k and total_sequence_length for GroupQueryAttention.
    m = "/model/attn_mask_reformat/attn_mask_subgraph"
    rs = node("ReduceSum", f"{m}/ReduceSum", ["attention_mask", const("INT64", [1])],
              [f"{m}/ReduceSum/output_0"], keepdims=0)
    sub = node("Sub", f"{m}/Sub", [rs, const("INT64", [1])], [f"{m}/Sub/output_0"])
    seqlens = node("Cast", f"{m}/Sub/Cast", [sub], [f"{m}/Sub/Cast/output_0"], to=TensorProto.INT32)
    shp = node("Shape", f"{m}/Shape", ["attention_mask"], [f"{m}/Shape/output_0"])
    g1 = node("Gather", f"{m}/Gather", [shp, const("INT64", 1)], [f"{m}/Gather/output_0"], axis=0)
    total = node("Cast", f"{m}/Gather/Cast", [g1], [f"{m}/Gather/Cast/output_0"], to=TensorProto.INT32)

    # The tied head, quantized once; the embedding gathers its rows (shared_embeddings).
    head = w("output.weight") if "output.weight" in t else w("token_embd.weight")
    hb, hs = quantize_q4(head.T)
    init("lm_head.MatMul.weight_Q4", hb)
    init("lm_head.MatMul.weight_scales", hs)
    e = "/model/embed_tokens"
    table = node("Reshape", f"{e}/Reshape", ["lm_head.MatMul.weight_Q4", const("INT64", [vocab, width // 2])],
                 [f"{e}/Reshape/output_0"])
    scales = node("Reshape", f"{e}/Reshape_1", ["lm_head.MatMul.weight_scales", const("INT64", [vocab, width // 32])],
                  [f"{e}/Reshape_1/output_0"])
    h = node("GatherBlockQuantized", f"{e}/GatherBlockQuantized", [table, "input_ids", scales],
             [f"{e}/GatherBlockQuantized/output_0"], domain="com.microsoft",
             bits=4, block_size=32, gather_axis=0, quantize_axis=1)

    # Rotary caches as the builder makes them: [context, hd/2].
    inv_freq = (1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))).astype(np.float32)
    freqs = np.outer(np.arange(context, dtype=np.float32), inv_freq).astype(np.float32)
    init("cos_cache", np.cos(freqs).astype(np.float32))
    init("sin_cache", np.sin(freqs).astype(np.float32))

    root, skip = h, None
    for i in range(layers):
        b = f"/model/layers.{i}"
        p = f"model.layers.{i}"
        ln1 = init(f"{p}.input_layernorm.weight", w(f"blk.{i}.attn_norm.weight"))
        if skip is None:
            x = node("SimplifiedLayerNormalization", f"{b}/input_layernorm/LayerNorm", [root, ln1],
                     [f"{b}/input_layernorm/output_0"], axis=-1, epsilon=eps, stash_type=1)
        else:
            x, root = node("SkipSimplifiedLayerNormalization", f"{b}/input_layernorm/SkipLayerNorm",
                           [root, skip, ln1], [f"{b}/input_layernorm/output_0", "", "", f"{b}/input_layernorm/output_3"],
                           domain="com.microsoft", epsilon=eps), f"{b}/input_layernorm/output_3"
        wq = unpermute(w(f"blk.{i}.attn_q.weight"), heads)
        wk = unpermute(w(f"blk.{i}.attn_k.weight"), kv)
        wv = w(f"blk.{i}.attn_v.weight")
        qkv = matmul_q4(f"{b}/attn/qkv_proj", x, np.concatenate([wq, wk, wv], 0).T, f"{p}.attn.qkv_proj")
        attn = node("GroupQueryAttention", f"{b}/attn/GroupQueryAttention",
                    [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total,
                     "cos_cache", "sin_cache"],
                    [f"{b}/attn/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"],
                    domain="com.microsoft", num_heads=heads, kv_num_heads=kv, scale=float(hd ** -0.5),
                    local_window_size=-1, softcap=0.0, do_rotary=1, rotary_interleaved=0)
        o = matmul_q4(f"{b}/attn/o_proj", attn, w(f"blk.{i}.attn_output.weight").T, f"{p}.attn.o_proj")
        ln2 = init(f"{p}.post_attention_layernorm.weight", w(f"blk.{i}.ffn_norm.weight"))
        x = node("SkipSimplifiedLayerNormalization", f"{b}/post_attention_layernorm/SkipLayerNorm",
                 [root, o, ln2], [f"{b}/post_attention_layernorm/output_0", "", "",
                                  f"{b}/post_attention_layernorm/output_3"],
                 domain="com.microsoft", epsilon=eps)
        root = f"{b}/post_attention_layernorm/output_3"
        mm = f"{b}/mlp"
        gate = matmul_q4(f"{mm}/gate_proj", x, w(f"blk.{i}.ffn_gate.weight").T, f"{p}.mlp.gate_proj")
        up = matmul_q4(f"{mm}/up_proj", x, w(f"blk.{i}.ffn_up.weight").T, f"{p}.mlp.up_proj")
        sg = node("Sigmoid", f"{mm}/act_fn/Sigmoid", [gate], [f"{mm}/act_fn/Sigmoid/output_0"])
        act = node("Mul", f"{mm}/act_fn/Mul", [gate, sg], [f"{mm}/act_fn/Mul/output_0"])
        prod = node("Mul", f"{mm}/Mul", [act, up], [f"{mm}/Mul/output_0"])
        skip = matmul_q4(f"{mm}/down_proj", prod, w(f"blk.{i}.ffn_down.weight").T, f"{p}.mlp.down_proj")

    f = f"/model/layers.{layers}/final_norm_layernorm"
    lnf = init(f"model.layers.{layers}.final_norm_layernorm.weight", w("output_norm.weight"))
    x = node("SkipSimplifiedLayerNormalization", f"{f}/SkipLayerNorm", [root, skip, lnf],
             [f"{f}/output_0"], domain="com.microsoft", epsilon=eps)
    node("MatMulNBits", "/lm_head/MatMul_Q4", [x, "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales"],
         ["logits"], domain="com.microsoft", K=width, N=vocab, bits=4, block_size=32, accuracy_level=ACCURACY_LEVEL)

    B, S, T, P = "batch_size", "sequence_length", "total_sequence_length", "past_sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [B, S]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, T])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [B, S, vocab])]
    for kind in ("key", "value"):
        for i in range(layers):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, [B, kv, P, hd]))
            outs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, [B, kv, T, hd]))
    graph = helper.make_graph(nodes, "main_graph", inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="onnxruntime-genai")
    model.ir_version = 10
    return r, model, hp


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


def dequantize_q4(w_kn):
    """W [K, N] through MatMulNBits' 4-bit blocks and back: what the 4-bit file computes with."""
    packed, scale = quantize_q4(w_kn)
    n, blocks, _ = packed.shape
    q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(n, blocks, -1).astype(np.float32)
    return ((q - 8) * scale.reshape(n, blocks, 1)).reshape(n, -1).T.astype(np.float32)


def build(src, split=False, q4=False):
    """The optimum layout; `q4`: every MatMul weight (and the tied embedding) as the 4-bit
    layout dequantizes it, the plain-op oracle of --layout genai."""
    mm = dequantize_q4 if q4 else (lambda x: x)
    r, t, w, hp = open_gguf(src)
    layers, width, heads, kv, hd = hp["layers"], hp["width"], hp["heads"], hp["kv"], hp["hd"]
    eps, base_freq, vocab = hp["eps"], hp["base"], hp["vocab"]

    g = Graph()
    if not split:
        g.weight("model.embed_tokens.weight", mm(w("token_embd.weight").T).T if q4 else w("token_embd.weight"))
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
        wq = g.weight(f"{p}.self_attn.q_proj.weight_T", mm(unpermute(w(f"blk.{i}.attn_q.weight"), heads).T))
        wk = g.weight(f"{p}.self_attn.k_proj.weight_T", mm(unpermute(w(f"blk.{i}.attn_k.weight"), kv).T))
        wv = g.weight(f"{p}.self_attn.v_proj.weight_T", mm(w(f"blk.{i}.attn_v.weight").T))
        wo = g.weight(f"{p}.self_attn.o_proj.weight_T", mm(w(f"blk.{i}.attn_output.weight").T))
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
        wg = g.weight(f"{p}.mlp.gate_proj.weight_T", mm(w(f"blk.{i}.ffn_gate.weight").T))
        wu = g.weight(f"{p}.mlp.up_proj.weight_T", mm(w(f"blk.{i}.ffn_up.weight").T))
        wd = g.weight(f"{p}.mlp.down_proj.weight_T", mm(w(f"blk.{i}.ffn_down.weight").T))
        gate = g.op("MatMul", [x, wg], f"{m}/gate_proj")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{m}/act_fn")], f"{m}/act_fn")
        up = g.op("MatMul", [x, wu], f"{m}/up_proj")
        d = g.op("MatMul", [g.op("Mul", [act, up], m), wd], f"{m}/down_proj")
        h = g.op("Add", [h, d], b)

    lnf = g.weight("model.norm.weight", w("output_norm.weight"))
    x = rms_norm(g, h, lnf, eps, "model/norm")
    head = w("output.weight") if "output.weight" in t else w("token_embd.weight")
    lm = g.weight("lm_head.weight_T", mm(head.T))
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
    return r, model, hp


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


def check_genai(r, out, oracle):
    """The 4-bit file against an oracle that shares none of its fused ops: the plain-op
    layout (GQA as MatMul/Softmax with Concat caches and repeat_kv, rotary as Mul/Slice, RMS
    norm as Pow/ReduceMean) with the same 4-bit weights dequantized, both run by ONNX
    Runtime for 16 greedy steps with their caches. Writes derive-check.json; exits 1 when the
    greedy tokens differ or a logit differs by more than the stated tolerance."""
    import onnxruntime as ort
    tokens = list(field(r, "tokenizer.ggml.tokens"))
    prompt = [tokens.index(t) for t in ["The", "\u0120capital", "\u0120of", "\u0120France", "\u0120is"]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2

    def greedy(session):
        names = [i.name for i in session.get_inputs()]
        past = {n: np.zeros((1, 3, 0, 64), np.float32) for n in names if n.startswith("past")}
        seq, new, got, rows = list(prompt), list(prompt), [], []
        for _ in range(16):
            feed = {"input_ids": np.array([new], np.int64), "attention_mask": np.ones((1, len(seq)), np.int64)}
            if "position_ids" in names:
                feed["position_ids"] = np.arange(len(seq) - len(new), len(seq), dtype=np.int64)[None]
            feed.update(past)
            res = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
            row = res["logits"][0, -1]
            rows.append(row)
            nxt = int(np.argmax(row))
            got.append(nxt)
            seq.append(nxt)
            new = [nxt]
            past = {n: res[n.replace("past_key_values", "present")] for n in past}
        return got, np.stack(rows)

    fused, fused_rows = greedy(ort.InferenceSession(os.path.join(out, "model.onnx"), opts,
                                                    providers=["CPUExecutionProvider"]))
    plain, plain_rows = greedy(ort.InferenceSession(oracle.SerializeToString(), opts,
                                                    providers=["CPUExecutionProvider"]))
    # Steps up to the first different token (all 16 when none differs).
    same = next((k for k, (x, y) in enumerate(zip(fused, plain)) if x != y), len(fused))
    diff = float(np.abs(fused_rows[:same] - plain_rows[:same]).max()) if same else float("inf")
    tol = 2e-3
    report = {"prompt_ids": prompt, "genai_tokens": fused, "plain_op_tokens": plain,
              "steps_compared": same, "max_abs_logit_difference": diff, "tolerance": tol,
              "onnxruntime": ort.__version__}
    with open(os.path.join(out, "derive-check.json"), "w") as f:
        json.dump(report, f, indent=2)
    if fused != plain or diff > tol:
        raise SystemExit(f"the genai layout does not compute what its plain-op oracle does: {report}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layout", choices=["optimum", "split", "genai"], default="optimum")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    split = a.layout == "split"
    r, model, c = build_genai(a.src) if a.layout == "genai" else build(a.src, split)
    graphs = [("decoder.onnx", model), ("embed.onnx", embed_graph(a.src))] if split else [("model.onnx", model)]
    for name, m in graphs:
        # onnx's checker does not know ONNX Runtime's SimplifiedLayerNormalization (a
        # contrib schema in the ONNX domain); ONNX Runtime's own run checks the genai file.
        if a.layout != "genai" and m.ByteSize() < 2**31:
            onnx.checker.check_model(m, full_check=False)
        # onnx appends to an existing data file: start from none.
        for f in (name, name + ".data"):
            if os.path.exists(os.path.join(a.out, f)):
                os.remove(os.path.join(a.out, f))
        onnx.save_model(m, os.path.join(a.out, name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=name + ".data", size_threshold=1024)
    if a.layout == "genai":
        check_genai(r, a.out, build(a.src, q4=True)[1])
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
    # The chat template as Hugging Face ships it: tokenizer_config.json.
    tokens = list(field(r, "tokenizer.ggml.tokens"))
    template = field(r, "tokenizer.chat_template")
    if template is not None:
        with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"chat_template": template, "bos_token": tokens[bos], "eos_token": tokens[eos]},
                      f, ensure_ascii=False, indent=2)


if __name__ == "__main__":
    main()
