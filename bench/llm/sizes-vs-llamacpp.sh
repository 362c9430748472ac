#!/bin/bash
# Device run (issue 20): m2w's bench-llm and llama.cpp's llama-bench (Vulkan, flash attention
# on; ../shared/peers/llama.cpp) on one GGUF at several prompt sizes, interleaved rounds.
# Usage, on the GPU machine after the Vulkan set-up of ../shared/DEVICE.md:
#   bash bench/llm/sizes-vs-llamacpp.sh BENCH_LLM LLAMA_BENCH LIBDIR MODEL.gguf ROUNDS PROMPT...
# Per round: bench-llm MODEL P 128 for each prompt size P (prefill of P tokens, then 128
# decode steps after it), then llama-bench's pp at every P and tg128 at depth 0 and at the
# largest P. Logs go to $OUT/logs.tgz.
set -e
B=$1; L=$2; LIB=$3; M=$4; R=$5
shift 5
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/nvidia-smi.txt"
sha256sum "$M" > "$OUT/model.sha256"
sizes=$(IFS=,; echo "$*")
last=${@: -1}
for round in $(seq 1 "$R"); do
  for p in "$@"; do
    "$B" "$M" "$p" 128 > "$OUT/m2w-p$p-$round.log" 2>&1 || echo "bench-llm failed at $p" >> "$OUT/errors.txt"
    grep RESULT "$OUT/m2w-p$p-$round.log" | sed "s/^/round $round p=$p /" || true
  done
  LD_LIBRARY_PATH=$LIB "$L" -m "$M" -ngl 99 -fa 1 -p "$sizes" -n 0 -r 5 -o json \
    > "$OUT/llamacpp-pp-$round.json" 2> "$OUT/llamacpp-pp-$round.err" || echo "llama-bench pp failed" >> "$OUT/errors.txt"
  LD_LIBRARY_PATH=$LIB "$L" -m "$M" -ngl 99 -fa 1 -p 0 -n 128 -d "0,$last" -r 5 -o json \
    > "$OUT/llamacpp-tg-$round.json" 2> "$OUT/llamacpp-tg-$round.err" || echo "llama-bench tg failed" >> "$OUT/errors.txt"
  grep -h '"avg_ts"\|"n_gen"\|"n_prompt"\|"n_depth"' "$OUT/llamacpp-"*"-$round.json" | tr -d ' \n'; echo
done
(cd "$OUT" && tar czf logs.tgz -- *.log *.json *.err *.sha256 nvidia-smi.txt && find . -type f ! -name logs.tgz -delete)
