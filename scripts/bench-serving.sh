#!/usr/bin/env bash
# The serving measurements in docs/performance.md ("Batching gain" and
# "Engine overhead"): the same synthetic workload served one sequence at a
# time and with up to 64 sequences per iteration, on the `bench` preset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prepare-bench-model.sh
BIN=.build/release/switchyard
MODEL=bench-models/bench-qwen3_moe
COMMON="--model $MODEL --num-prompts 64 --request-rate inf --input-len 128 --output-len 64 --seed 1 --quiet"
$BIN bench $COMMON --max-num-seqs 1 --max-num-batched-tokens 512 --label batch1 --save-result docs/results/serving-batch1.json
$BIN bench $COMMON --max-num-seqs 64 --max-num-batched-tokens 512 --label batch64 --save-result docs/results/serving-batch64.json
python3 - <<'PY'
import json
a = json.load(open("docs/results/serving-batch1.json")); b = json.load(open("docs/results/serving-batch64.json"))
print(f"output throughput: batch 1 {a['output_throughput']:.1f} tok/s, up to 64 {b['output_throughput']:.1f} tok/s, gain {b['output_throughput']/a['output_throughput']:.2f}x")
for r in (a, b):
    e = r["engine"]
    print(f"{r['label']}: engine overhead {100*e['overhead_share']:.2f}% of iteration time "
          f"(schedule {e['time_s']['schedule']:.3f}s, sample+bookkeeping {e['time_s']['sample_and_bookkeeping']:.3f}s, forward {e['time_s']['forward']:.2f}s), "
          f"mean tokens/iteration {e['mean_tokens_per_iteration']:.1f}")
PY
