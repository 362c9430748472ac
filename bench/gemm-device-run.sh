#!/bin/bash
# bench-gemm + cuBLAS peer in one run (issue 4). Expects the Vulkan loader already unpacked.
D=$(dirname "$0")
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/nvidia-smi.txt
export PYTHONUNBUFFERED=1
python3 $D/cublas_sgemm.py --json $OUT/cublas_before.json 2>&1 | tee $OUT/cublas.log
$D/bench-gemm --variants $D/variants --json $OUT/wgpu.json "$@" 2>&1 | tee $OUT/bench.log
python3 $D/cublas_sgemm.py --json $OUT/cublas_after.json 2>&1 | tee -a $OUT/cublas.log
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv | tee -a $OUT/nvidia-smi.txt
