#!/usr/bin/env python3
"""Writes the independent expectations that m2w's inspect/extract tests compare against.

Made with the `onnx` (1.22.0), `safetensors` and `numpy` Python packages, which share no
code with m2w. Run once by hand when a fixture changes (CI does not need Python packages):

    python3 -m pip install onnx==1.22.0 safetensors numpy
    M2W_CACHE=... python3 scripts/expect_inventory.py   # fixtures from `cargo xtask fixtures`

Writes crates/inspect/tests/expected/<fixture>.json (ops and weights) and
crates/extract/tests/expected/minilm-int8-dequant.json (sha256 of each dequantized weight).
"""
import collections
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("M2W_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "m2w")
FIX = os.path.join(CACHE, "fixtures")

DTYPES = {1: "f32", 2: "u8", 3: "i8", 4: "u16", 5: "i16", 6: "i32", 7: "i64", 8: "string",
          9: "bool", 10: "f16", 11: "f64", 12: "u32", 13: "u64", 16: "bf16"}


def onnx_inventory(path):
    model = onnx.load(path, load_external_data=False)
    ops = collections.Counter()
    weights = []

    def key(scope, name):
        return name if not scope else f"{scope}::{name}"

    def walk(graph, scope):
        for t in graph.initializer:
            weights.append([key(scope, t.name), list(t.dims), DTYPES[t.data_type]])
        for i, node in enumerate(graph.node):
            ops[f"{node.domain}:{node.op_type}"] += 1
            label = node.name or f"{node.op_type}#{i}"
            if node.op_type == "Constant" and node.domain == "":
                arr = onnx.helper.get_attribute_value(node.attribute[0])
                if isinstance(arr, onnx.TensorProto):
                    weights.append([key(scope, node.output[0]), list(arr.dims), DTYPES[arr.data_type]])
                else:
                    a = np.array(arr)
                    weights.append([key(scope, node.output[0]), list(a.shape), "f32" if a.dtype.kind == "f" else "i64"])
            prefix = f"{scope}/" if scope else ""
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, f"{prefix}{label}.{attr.name}")
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for j, g in enumerate(attr.graphs):
                        walk(g, f"{prefix}{label}.{attr.name}[{j}]")

    walk(model.graph, "")
    return {"made_by": f"onnx {onnx.__version__}", "ops": dict(sorted(ops.items())), "weights": weights}


def safetensors_inventory(path):
    from safetensors import safe_open
    names = {"F32": "f32", "F16": "f16", "BF16": "bf16", "I64": "i64", "I32": "i32"}
    weights = []
    with safe_open(path, "np") as f:
        for k in sorted(f.keys()):
            sl = f.get_slice(k)
            weights.append([k, list(sl.get_shape()), names[sl.get_dtype()]])
    import safetensors
    return {"made_by": f"safetensors {safetensors.__version__}", "ops": {}, "weights": weights}


def minilm_dequant(path):
    """sha256 of the f32 bytes of q.astype(float32) * scale for each Cast->Mul weight."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Mul" and node.input[0].endswith("_f") and node.input[1] in inits:
            q = inits[node.input[0][:-2] + "_q"]
            s = inits[node.input[1]]
            w = (q.astype(np.float32) * s).astype(np.float32)
            out[node.output[0]] = hashlib.sha256(w.tobytes()).hexdigest()
    return {"made_by": f"numpy {np.__version__}", "sha256_f32": dict(sorted(out.items()))}


def main():
    jobs = {
        "minilm-int8": ("minilm-int8/model.onnx", onnx_inventory),
        "silero-vad-v6": ("silero-vad-v6/silero_vad_v6.onnx", onnx_inventory),
        "silero-vad-if": ("silero-vad-if/silero_vad.onnx", onnx_inventory),
        "ppocr-det": ("ppocr-det/ch_PP-OCRv4_det_infer.onnx", onnx_inventory),
        "minilm-safetensors": ("minilm-safetensors/model.safetensors", safetensors_inventory),
    }
    for name, (rel, fn) in jobs.items():
        data = fn(os.path.join(FIX, rel))
        with open(os.path.join(ROOT, "crates/inspect/tests/expected", f"{name}.json"), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(name, len(data["weights"]), "weights", sum(data["ops"].values()), "nodes")
    d = minilm_dequant(os.path.join(FIX, "minilm-int8/model.onnx"))
    with open(os.path.join(ROOT, "crates/extract/tests/expected/minilm-int8-dequant.json"), "w") as f:
        json.dump(d, f, indent=1)
        f.write("\n")
    print("minilm-int8 dequant", len(d["sha256_f32"]))


if __name__ == "__main__":
    sys.exit(main())
