#!/usr/bin/env bash
# The measurements in docs/performance.md ("Kernels" and "Whole model"):
# kernel benchmark, then decode/prefill speed on the `bench` preset in BF16.
# Results are written to docs/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prepare-bench-model.sh
BIN=.build/release/switchyard
MODEL=bench-models/bench-qwen3_moe
$BIN kernel-bench --save-result docs/results/kernel-bench.json
$BIN forward-bench --model "$MODEL" --batch-sizes 1,16,64 --context 64 --decode-steps 32 --prefill-len 512 \
  --save-result docs/results/forward-bench.json
