#!/bin/bash
# Device run (issue 20): m2w's bench-llm and llama.cpp's llama-bench (Vulkan, flash attention
# on; ../shared/peers/llama.cpp) on one GGUF at several prompt sizes, interleaved rounds.
# Usage, on the GPU machine after the Vulkan set-up of ../shared/DEVICE.md:
#   bash bench/llm/sizes-vs-llamacpp.sh BENCH_LLM LLAMA_BENCH LIBDIR MODEL.gguf ROUNDS PROMPT...
# Per round: bench-llm MODEL P 128 for each prompt size P (prefill of P tokens, then 128
# decode steps after it), then llama-bench's pp at every P and tg128 at depth 0 and at the
# largest P. Peak GPU memory (nvidia-smi memory.used, whole device, sampled every 50 ms,
# less the idle baseline) of each command goes to its log. Logs go to $OUT/logs.tgz.
set -e
B=$1; L=$2; LIB=$3; M=$4; R=$5
shift 5
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/nvidia-smi.txt"
sha256sum "$M" > "$OUT/model.sha256"
sizes=$(IFS=,; echo "$*")
used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
base=$(used)
# peak FILE CMD...: runs CMD, appends "peak_gpu_mib=N" (above the baseline) to FILE.
peak() {
  local f=$1; shift
  local m=/tmp/peak.$$; echo 0 > $m
  ( while true; do u=$(used); [ "$u" -gt "$(cat $m)" ] && echo "$u" > $m; sleep 0.05; done ) & local p=$!
  "$@" >> "$f" 2>&1; local rc=$?
  kill $p; wait $p 2>/dev/null
  echo "peak_gpu_mib=$(( $(cat $m) - base )) (baseline $base MiB)" >> "$f"
  return $rc
}
last=${@: -1}
for round in $(seq 1 "$R"); do
  for p in "$@"; do
    peak "$OUT/m2w-p$p-$round.log" "$B" "$M" "$p" 128 || echo "bench-llm failed at $p" >> "$OUT/errors.txt"
    grep "RESULT\|peak_gpu" "$OUT/m2w-p$p-$round.log" | sed "s/^/round $round p=$p /" || true
  done
  LD_LIBRARY_PATH=$LIB "$L" -m "$M" -ngl 99 -fa 1 -p "$sizes" -n 0 -r 5 -o json \
    > "$OUT/llamacpp-pp-$round.json" 2> "$OUT/llamacpp-pp-$round.err" || echo "llama-bench pp failed" >> "$OUT/errors.txt"
  LD_LIBRARY_PATH=$LIB "$L" -m "$M" -ngl 99 -fa 1 -p 0 -n 128 -d "0,$last" -r 5 -o json \
    > "$OUT/llamacpp-tg-$round.json" 2> "$OUT/llamacpp-tg-$round.err" || echo "llama-bench tg failed" >> "$OUT/errors.txt"
  # Peak memory of both at the largest prompt and 128 new tokens (m2w without its copy test).
  BENCH_LLM_NO_COPY=1 peak "$OUT/m2w-peak-$round.log" "$B" "$M" "$last" 128 || true
  grep peak_gpu "$OUT/m2w-peak-$round.log" | sed "s/^/round $round m2w /" || true
  LD_LIBRARY_PATH=$LIB peak "$OUT/llamacpp-peak-$round.log" "$L" -m "$M" -ngl 99 -fa 1 -p "$last" -n 128 -r 1 || true
  grep peak_gpu "$OUT/llamacpp-peak-$round.log" | sed "s/^/round $round llama.cpp /" || true
  grep -h '"avg_ts"\|"n_gen"\|"n_prompt"\|"n_depth"' "$OUT/llamacpp-"*"-$round.json" | tr -d ' \n'; echo
done
(cd "$OUT" && tar czf logs.tgz -- *.log *.json *.err *.sha256 nvidia-smi.txt && find . -type f ! -name logs.tgz -delete)
