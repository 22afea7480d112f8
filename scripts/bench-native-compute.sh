#!/usr/bin/env bash
# The native-compute measurements in docs/performance.md ("Native BF16
# compute"): oneDNN vs OpenBLAS and bfloat16 vs float32, every ratio taken
# between arms of the same run, on the `compare` preset (the checkpoint of the
# llama.cpp comparison in shared/notes/cpu-compute.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prepare-bench-model.sh
BIN=.build/release/switchyard
MODEL=bench-models/compare-qwen3_moe
[ -f "$MODEL/model.safetensors" ] || $BIN model create --arch qwen3_moe --preset compare --out "$MODEL" --seed 0
OUT=docs/results
BASE="--gemm openblas --dtype float32"
NEW="--gemm onednn --dtype bfloat16"

# Kernels, against the same-run peaks of each library.
$BIN kernel-bench --save-result $OUT/kernel-bench-native.json | tee $OUT/kernel-bench-native.txt

# Prefill 512 and decode, the two arms alternated twice.
: > $OUT/forward-bench-native.txt
for round in 1 2; do
  for arm in "$BASE" "$NEW" "--gemm onednn --dtype float32"; do
    echo "== round $round: $arm" | tee -a $OUT/forward-bench-native.txt
    $BIN forward-bench --model $MODEL --batch-sizes 1,16,64 --decode-steps 16 --prefill-len 512 $arm 2>/dev/null \
      | tee -a $OUT/forward-bench-native.txt
  done
done

# Serving: 64 requests x 256 prompt / 64 output tokens, all at t=0.
$BIN ab --model $MODEL --num-prompts 64 --input-len 256 --output-len 64 --request-rate inf --seed 1 \
  --max-num-seqs 64 --max-num-batched-tokens 2048 \
  --a "$BASE" --b "$NEW" --repeats 2 --save-result $OUT/ab-native-serving.json 2>/dev/null | tee $OUT/ab-native-serving.txt

# Chunked vs layered prefill on the faster compute (the docs/strategies.md workload).
$BIN ab --model bench-models/bench-qwen3_moe --num-prompts 16 --input-len 1280 --range-ratio 0.6 \
  --output-len 16 --request-rate 1 --burstiness 0.5 --seed 5 --arrival-clock iteration --iteration-ms 130 \
  --a "--scheduler chunked --max-num-batched-tokens 512 $NEW" --b "--scheduler layered $NEW" --repeats 2 \
  --save-result $OUT/ab-chunked-vs-layered-bf16.json 2>/dev/null | tee $OUT/ab-chunked-vs-layered-bf16.txt
