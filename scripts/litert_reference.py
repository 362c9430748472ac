"""TFLite reference activations through LiteRT's own interpreter (ai-edge-litert, pinned
by m2w's reference phase).

Runs the model on the inputs given as .npy files, with every intermediate tensor kept
(experimental_preserve_all_tensors) and the builtin kernels only
(BUILTIN_WITHOUT_DEFAULT_DELEGATES: with the default XNNPACK delegate, the tensors inside
a delegated partition read back as zeros). Runs twice in two interpreters and lists the
tensors that differ between them.

Writes into --out: one NNN.npy per operator output in execution order, and litert.json:
  {"runtime": "...", "checkpoints": [{"op_index", "op_type", "tensor" (its index in the
  primary subgraph: m2w names it as its reader does), "file", "shape", "dtype"}],
  "differ": [tensor indices]}
"""

import argparse
import json
import os

import numpy as np
from ai_edge_litert import interpreter as litert


def run(model, inputs):
    it = litert.Interpreter(
        model_path=model,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    # Inputs by tensor index (m2w names tensors by index: TFLite's names may repeat).
    for d in it.get_input_details():
        if d["index"] not in inputs:
            raise SystemExit(f"no value given for input tensor {d['index']} ('{d['name']}')")
        it.set_tensor(d["index"], inputs[d["index"]].astype(d["dtype"]))
    it.invoke()
    values = []
    for op in it._get_ops_details():
        for t in op["outputs"]:
            if t < 0:
                continue
            values.append((op["index"], op["op_name"], int(t), it.get_tensor(t)))
    return values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help="JSON object: input tensor index -> .npy path")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.inputs) as f:
        inputs = {int(k): np.load(v) for k, v in json.load(f).items()}
    first = run(args.model, inputs)
    second = run(args.model, inputs)
    differ = [
        a[2]
        for a, b in zip(first, second)
        if a[3].tobytes() != b[3].tobytes()
    ]
    os.makedirs(args.out, exist_ok=True)
    checkpoints = []
    for k, (index, op, name, value) in enumerate(first):
        file = f"{k:04d}.npy"
        np.save(os.path.join(args.out, file), np.ascontiguousarray(value))
        checkpoints.append(
            {
                "op_index": index,
                "op_type": op,
                "tensor": name,
                "file": file,
                "shape": list(value.shape),
                "dtype": str(value.dtype),
            }
        )
    import ai_edge_litert

    version = getattr(ai_edge_litert, "__version__", "?")
    with open(os.path.join(args.out, "litert.json"), "w") as f:
        json.dump(
            {
                "runtime": f"LiteRT interpreter (ai-edge-litert {version}, builtin kernels, no delegate)",
                "checkpoints": checkpoints,
                "differ": differ,
            },
            f,
        )


if __name__ == "__main__":
    main()
