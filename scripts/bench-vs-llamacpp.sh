#!/usr/bin/env bash
# Switchyard against llama.cpp on the same checkpoint (the `compare` preset),
# alternated twice in one run: prefill 512 and batch-1 decode, tok/s.
# llama.cpp is built from the vendored copy in llama-cpp-python's sdist and
# the checkpoint converted to a BF16 GGUF (shared/notes/cpu-compute.md);
# nothing of it is committed. Usage:
#   scripts/bench-vs-llamacpp.sh PATH/TO/llama-bench PATH/TO/compare-bf16.gguf [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
LB=$1; GGUF=$2; OUT=${3:-docs/results/vs-llamacpp.txt}
BIN=.build/release/switchyard
MODEL=bench-models/compare-qwen3_moe
: > "$OUT"
for round in 1 2; do
  echo "== round $round: llama.cpp (llama-bench -t 2 -p 512 -n 64, BF16 GGUF)" | tee -a "$OUT"
  "$LB" -m "$GGUF" -t 2 -p 512 -n 64 -r 3 2>/dev/null | tee -a "$OUT"
  echo "== round $round: switchyard forward-bench --gemm onednn --dtype bfloat16" | tee -a "$OUT"
  "$BIN" forward-bench --model $MODEL --batch-sizes 1 --decode-steps 32 --prefill-len 512 --gemm onednn --dtype bfloat16 2>/dev/null | tee -a "$OUT"
done
