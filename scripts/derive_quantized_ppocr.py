#!/usr/bin/env python3
"""Derives a static-quantized (QDQ, int8, per output channel) PP-OCRv4 text detector from the
cached f32 fixture ppocr-det, with onnxruntime's own quantize_static: the form most int8
vision models take. Its conv weights are DequantizeLinear(int8 constant) per channel.

Pins (same environment as derive_quantized_minilm.py):
    python 3.11, onnx==1.22.0, onnxruntime==1.31.1, numpy==2.4.6

    python scripts/derive_quantized_ppocr.py --src ch_PP-OCRv4_det_infer.onnx --out DIR

Writes DIR/ppocr-det-qdq-int8.onnx. Calibration: four images of numpy's default_rng(seed)
standard normal values, seeds 0..3, shape [1, 3, 64, 64] (m2w's reference default size).
The exporter stored the weights as Constant nodes; they become initializers first, since
the quantizer only quantizes initializers, and the graph is converted to opset 13 (ONNX's
version converter), where DequantizeLinear takes a per-channel axis.
"""
import argparse
import logging
import os

import numpy as np
import onnx
import onnx.version_converter
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

logging.getLogger().setLevel(logging.WARNING)


def constants_to_initializers(model):
    g = model.graph
    kept, moved = [], []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            moved.append(t)
        else:
            kept.append(n)
    g.ClearField("node")
    g.node.extend(kept)
    g.initializer.extend(moved)
    return model


class Reader(CalibrationDataReader):
    def __init__(self, name, seeds):
        self.it = iter(
            [{name: np.random.default_rng(s).standard_normal((1, 3, 64, 64)).astype(np.float32)} for s in seeds]
        )

    def get_next(self):
        return next(self.it, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    f32 = os.path.join(args.out, "ppocr-det-f32-initializers.onnx")
    # Per-channel DequantizeLinear (its axis attribute) needs opset 13; the export is older.
    m = onnx.version_converter.convert_version(constants_to_initializers(onnx.load(args.src)), 13)
    onnx.save_model(m, f32, save_as_external_data=False)
    quantize_static(
        f32,
        os.path.join(args.out, "ppocr-det-qdq-int8.onnx"),
        Reader(m.graph.input[0].name, range(4)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )


if __name__ == "__main__":
    main()
