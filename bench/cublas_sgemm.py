#!/usr/bin/env python3
"""cuBLAS GEMM peer: SGEMM for bench-gemm (issue 4; torch.matmul on CUDA float32, TF32 off),
HGEMM for the subgroup-matrix kernels of bench/dawn/gemm-subgroup-matrix.mjs (issue 20;
`--dtype f16`: float16 inputs and output, cuBLAS's default float32 accumulation).

    python3 bench/cublas_sgemm.py [--sizes 2048,4096] [--reps 7] [--dtype f32|f16] [--json FILE]

Warm-up, then per repetition many back-to-back products between two CUDA events; prints the
median TFLOP/s and the relative error of one product against float64 (TF32 would show ~1e-4).
"""
import argparse
import json
import statistics

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="2048,4096")
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
ap.add_argument("--json")
args = ap.parse_args()

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = torch.cuda.get_device_name()
name = "HGEMM" if args.dtype == "f16" else "SGEMM"
print(f"torch {torch.__version__} on {dev}, allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
      f"fp16 reduced-precision reduction={torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction}")
res = []
g = torch.Generator(device="cuda").manual_seed(1)
for n in [int(s) for s in args.sizes.split(",")]:
    dt = torch.float16 if args.dtype == "f16" else torch.float32
    a = (torch.rand(n, n, device="cuda", generator=g) * 2 - 1).to(dt)
    b = (torch.rand(n, n, device="cuda", generator=g) * 2 - 1).to(dt)
    c = torch.empty(n, n, device="cuda", dtype=dt)
    ref = (a.double() @ b.double())
    torch.matmul(a, b, out=c)
    err = ((c.double() - ref).abs().max() / ref.abs().max()).item()
    del ref
    iters = 50 if n <= 2048 else 12
    for _ in range(10):
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize()
    times = []
    for _ in range(args.reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3 / iters)
    t = statistics.median(times)
    tf = 2 * n**3 / t / 1e12
    print(f"cuBLAS {name} {n}^3: {tf:.2f} TFLOP/s (median of {args.reps} x {iters}), rel err vs f64 {err:.1e}")
    res.append({"dtype": args.dtype, "size": n, "tflops": tf, "rel_err_vs_f64": err, "times_s": times})
if args.json:
    with open(args.json, "w") as f:
        json.dump({"device": dev, "torch": torch.__version__, "results": res}, f, indent=1)
