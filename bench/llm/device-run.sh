#!/bin/bash
# Device run: join the GGUF, check it, m2w bench then the PyTorch peer, peak GPU memory of each.
set -e
cat /tmp/parta .dev/llm-b/part > /tmp/model.gguf
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/model.gguf" | sha256sum -c
python3 -m pip install --no-index --no-deps --quiet .dev/llm-b/gguf-0.19.0-py3-none-any.whl 2>&1 | grep -v WARNING | tail -2 || true; export PYTHONPATH=$PWD/.dev/llm-b/gguf-0.19.0-py3-none-any.whl
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/nvidia-smi.txt
peak() { local f=$1; echo 0 > $f; while true; do m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1); [ "$m" -gt "$(cat $f)" ] && echo $m > $f; sleep 0.05; done; }
base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1); echo "baseline $base MiB" > $OUT/baseline.txt
peak $OUT/peak-mem-m2w.txt & P=$!
./.dev/llm-b/bench-llm /tmp/model.gguf 64 128 2>&1 | tee $OUT/m2w.log
kill $P
peak $OUT/peak-mem-torch.txt & P=$!
python3 .dev/llm-b/torch_llama.py /tmp/model.gguf 64 128 2>&1 | tee $OUT/torch.log
kill $P
cat $OUT/peak-mem-*.txt $OUT/baseline.txt
