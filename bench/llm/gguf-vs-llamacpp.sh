#!/bin/bash
# Device run (issue 14): m2w's bench-llm and llama.cpp's llama-bench (Vulkan backend, the
# peer of ../shared/peers/llama.cpp) on the same GGUF files and GPU, in one command, two
# interleaved rounds each (llama-bench's decode figure is noisy run to run).
# Usage, on the GPU machine after the Vulkan set-up of ../shared/DEVICE.md:
#   bash bench/llm/gguf-vs-llamacpp.sh DIR MODEL.gguf...
# DIR holds bench-llm (release, stripped), llama-bench.xz and lib.tar.xz. Logs go to $OUT.
set -e
D=$1
shift
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('$D/llama-bench.xz'),open('/tmp/llama-bench','wb'))"
chmod +x /tmp/llama-bench
mkdir -p /tmp/lb && tar xJf "$D/lib.tar.xz" -C /tmp/lb
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/nvidia-smi.txt"
for m in "$@"; do
  name=$(basename "$m" .gguf)
  sha256sum "$m" > "$OUT/$name.sha256"
  for round in 1 2; do
    "$D/bench-llm" "$m" 64 128 > "$OUT/$name-m2w-$round.log" 2>&1 || echo "bench-llm failed on $name" >> "$OUT/errors.txt"
    LD_LIBRARY_PATH=/tmp/lb/lib /tmp/llama-bench -m "$m" -ngl 99 -p 64 -n 128 -r 5 -o json \
      > "$OUT/$name-llamacpp-$round.json" 2> "$OUT/$name-llamacpp-$round.err" || echo "llama-bench failed on $name" >> "$OUT/errors.txt"
  done
  grep RESULT "$OUT/$name-m2w-"*.log || true
  grep -h '"avg_ts"\|"n_gen"\|"n_prompt"' "$OUT/$name-llamacpp-"*.json || true
done
# One archive comes back whole (the device tool returns a few files per call).
(cd "$OUT" && tar czf logs.tgz -- *.log *.json *.err *.sha256 nvidia-smi.txt && find . -type f ! -name logs.tgz -delete)
