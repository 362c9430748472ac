#!/usr/bin/env python3
"""Derives quantized MiniLM fixtures from the cached int8-weight MiniLM (fixture minilm-int8).

Pins (other versions may quantize or serialize differently, so the bytes would differ):
    python 3.11, onnx==1.22.0, onnxruntime==1.31.1, numpy==2.4.6, onnx-ir==1.1.0
    (onnx-ir: matmul_nbits_quantizer imports it; protobuf==7.36.2, ml_dtypes==0.6.0 came along)

    python3 -m venv /tmp/fx/venv
    /tmp/fx/venv/bin/pip install onnx==1.22.0 onnxruntime==1.31.1 numpy==2.4.6 onnx-ir==1.1.0
    /tmp/fx/venv/bin/python scripts/derive_quantized_minilm.py \
        --src ~/.cache/m2w/fixtures/minilm-int8/model.onnx --out /tmp/fx/minilm

Writes into --out:
    minilm-fp32.onnx            the source with its weight dequantization folded into f32 initializers
    minilm-dynamic-int8.onnx    quantize_dynamic: DynamicQuantizeLinear + MatMulInteger
    minilm-qdq-int8.onnx        quantize_static, QDQ format, MinMax calibration
    minilm-q4-sym.onnx          MatMulNBitsQuantizer, 4 bits, block 32, symmetric (com.microsoft MatMulNBits)
    minilm-q4-asym.onnx         the same, asymmetric (with zero points)

Calibration inputs are m2w's own reference inputs (crates/reference/src/onnx_ref.rs): shape
[1, 16], splitmix64 seeded with seeds 0..7 (seed 0 is what `m2w port` feeds ORT), input_ids
uniform below the vocabulary, attention_mask ones, token_type_ids uniform in [0, 2).
(Seed 0 equals the inputs/ of an `m2w port` reference directory of this model, byte for byte.)

From the fixture with sha256 8199be6f...14f3d2a6 these pins give (sha256, bytes):
    minilm-fp32.onnx          533915b325dc3270e398a3352d33d580e6370100b0416ad9268d0d778dde2bea  90317380
    minilm-dynamic-int8.onnx  0d9af7254bb4c9cb95b362e4f13301508267ec0f863bc0b73b1787399307ec6b  58488329
    minilm-qdq-int8.onnx      fda44944efcf896dce19605330fd1cf7426c2a8ec0d4a91873e353905207a10f  58510928
    minilm-q4-sym.onnx        4b469d2f0838096bfc0953b7d892095995b502fa48e182c2e6122cd0e46ad973  54490313
    minilm-q4-asym.onnx       5f1ad42a137323df37656a658a37d30567526721f54de2e1225f4d8139a3252c  54658175

The fold is exact (the f32 weights are the bits ORT's Cast+Mul computes); ORT outputs match
the source bit for bit with optimizations on, or with session.disable_prepacking=1. With
optimizations off and prepacking on they differ by ~2e-6: MLAS prepacks constant MatMul
weights, which the source (weights computed at run time) does not get.
"""
import argparse
import logging
import os

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

# The nbits quantizer's module calls logging.basicConfig(level=INFO) on import: one line per node.
logging.getLogger().setLevel(logging.WARNING)

M64 = (1 << 64) - 1


class SplitMix:
    """m2w's reference-input generator (onnx_ref.rs `Rng`), bit for bit."""

    def __init__(self, seed):
        self.s = (seed ^ 0x6A09E667F3BCC909) & M64

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


def m2w_inputs(seed, seq=16, vocab=30522, type_vocab=2):
    # Graph input order matters: one generator is drawn through the inputs in order, and
    # the mask (no Gather reads it) takes no draws.
    r = SplitMix(seed)
    ids = np.array([[r.next_u64() % vocab for _ in range(seq)]], dtype=np.int64)
    mask = np.ones((1, seq), dtype=np.int64)
    types = np.array([[r.next_u64() % type_vocab for _ in range(seq)]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def fold_weight_dequant(model):
    """int8 initializer -> Cast(to float) -> Mul(f32 initializer scale) becomes one f32
    initializer named after the Mul's output, so every consumer is left untouched."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    uses = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    # Nodes are tracked by index: protobuf wrappers are transient, so id() is not stable.
    nodes = list(g.node)
    casts = {
        n.output[0]: k
        for k, n in enumerate(nodes)
        if n.op_type == "Cast" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    }
    drop_nodes, drop_inits, new_inits = set(), set(), []
    for k, n in enumerate(nodes):
        if n.op_type != "Mul":
            continue
        a, b = n.input
        if b in casts:
            a, b = b, a
        if a not in casts or b not in inits or uses[a] != 1:
            continue
        cast = nodes[casts[a]]
        q = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32)
        # One f32 multiply, rounded once: the same bits ORT's Cast+Mul gives.
        w = (q * numpy_helper.to_array(inits[b]).astype(np.float32)).astype(np.float32)
        new_inits.append(numpy_helper.from_array(w, n.output[0]))
        drop_nodes.update([casts[a], k])
        for t in (cast.input[0], b):
            uses[t] -= 1
            if uses[t] == 0:
                drop_inits.add(t)
    kept = [n for k, n in enumerate(nodes) if k not in drop_nodes]
    inits_kept = [t for t in g.initializer if t.name not in drop_inits]
    g.ClearField("node")
    g.node.extend(kept)
    g.ClearField("initializer")
    g.initializer.extend(inits_kept + new_inits)
    onnx.checker.check_model(model)
    return model, len(new_inits)


class Reader(CalibrationDataReader):
    def __init__(self, seeds):
        self.it = iter([m2w_inputs(s) for s in seeds])

    def get_next(self):
        return next(self.it, None)


def save(model, path):
    # One self-contained file: external data would add a second file (and a location string).
    onnx.save_model(model, path, save_as_external_data=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib-seeds", type=int, default=8, help="calibrate on seeds 0..N-1")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = lambda n: os.path.join(args.out, n)  # noqa: E731

    fp32, n = fold_weight_dequant(onnx.load(args.src))
    save(fp32, out("minilm-fp32.onnx"))
    print(f"folded {n} int8 weights into f32 initializers")

    # Only MatMul, so the fixtures are about quantized matmuls: quantize_dynamic's default
    # also turns the three embedding Gathers into DequantizeLinear+Gather. ORT's optional
    # pre-processing (quant_pre_process) is skipped on purpose, despite its warning: it
    # would run ORT's graph optimizer and tie the fixture's graph to it.
    quantize_dynamic(
        out("minilm-fp32.onnx"),
        out("minilm-dynamic-int8.onnx"),
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QInt8,
    )

    # quantize_static writes its augmented calibration model to its own temp dir; MinMax
    # over a fixed, ordered input list on the CPU provider is deterministic.
    quantize_static(
        out("minilm-fp32.onnx"),
        out("minilm-qdq-int8.onnx"),
        Reader(range(args.calib_seeds)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )

    for name, sym in (("minilm-q4-sym.onnx", True), ("minilm-q4-asym.onnx", False)):
        q = MatMulNBitsQuantizer(onnx.load(out("minilm-fp32.onnx")), bits=4, block_size=32, is_symmetric=sym)
        q.process()
        save(q.model.model, out(name))


if __name__ == "__main__":
    main()
