#!/bin/bash
# Every fuzz target side by side on a many-core machine (the GPU machine's 16 cores): $1
# seconds, 2 forks each, from one binary (`any`, chosen by M2W_FUZZ_TARGET). Beside this
# script: any.xz (fuzz/target/x86_64-unknown-linux-gnu/release/any after `cargo fuzz build
# --release any`, stripped of debug info, xz) and corpus.tar.xz (`tar -C fuzz -cJf - corpus`).
# Findings go to $OUT/artifacts/TARGET/, logs to $OUT/TARGET.log; the last line per target
# has its execs ("#N: cov ...").
set -u
S=$1
OUT=${OUT:-/tmp/fuzz-out}
cd "$(dirname "$0")"
xz -dc any.xz > /tmp/any && chmod +x /tmp/any
mkdir -p /tmp/fz && tar -C /tmp/fz -xJf corpus.tar.xz
nproc
for t in onnx gguf safetensors tflite npy manifest plan; do
  mkdir -p /tmp/fz/found/$t $OUT/artifacts/$t
  case $t in onnx|tflite|gguf) L=4194304;; *) L=1048576;; esac
  M2W_FUZZ_TARGET=$t /tmp/any /tmp/fz/found/$t /tmp/fz/corpus/$t -fork=2 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time=$S -max_len=$L -rss_limit_mb=2048 -timeout=20 -artifact_prefix=$OUT/artifacts/$t/ > $OUT/$t.log 2>&1 &
done
wait
for t in onnx gguf safetensors tflite npy manifest plan; do
  last=$(grep -a "^#[0-9]*: cov" $OUT/$t.log | tail -1)
  echo "$t | $last | artifacts $(ls $OUT/artifacts/$t | wc -l) | corpus $(ls /tmp/fz/found/$t | wc -l)"
done
