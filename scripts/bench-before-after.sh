#!/usr/bin/env bash
# Two builds of switchyard on the same workloads, alternated, as ratios B/A:
# what a refactor must leave unchanged (docs/performance.md, "Before and
# after"). Usage:
#   scripts/bench-before-after.sh BIN_A BIN_B [OUT_DIR]
# PREFILL_LEN (default 512) sets forward-bench's prompt, CONTEXT (default
# 64) the context its decode steps start at; SERVING=0 skips the serving
# runs (their rows then read n/a).
# e.g. BIN_A from `git worktree add /tmp/before <rev> && (cd /tmp/before && swift build -c release)`.
# Needs python3 for the ratio table.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; OUT=${3:-docs/results/before-after}; ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
MODEL=bench-models/compare-qwen3_moe
[ -f "$MODEL/model.safetensors" ] || "$B" model create --arch qwen3_moe --preset compare --out "$MODEL" --seed 0
COMPUTE="--gemm onednn --dtype bfloat16"
PREFILL_LEN=${PREFILL_LEN:-512}; SERVING=${SERVING:-1}; CONTEXT=${CONTEXT:-64}
# SUMMARY_ONLY=1 redoes the table from the saved runs.
[ "${SUMMARY_ONLY:-0}" = 1 ] || for round in $(seq "$ROUNDS"); do
  for arm in A B; do
    BIN=$A; [ $arm = B ] && BIN=$B
    echo "== round $round, arm $arm ($BIN)" >&2
    "$BIN" forward-bench --model $MODEL --batch-sizes 1,16,64 --decode-steps 16 --context $CONTEXT --prefill-len $PREFILL_LEN $COMPUTE \
      --save-result "$OUT/forward-$arm-$round.json" > /dev/null 2>&1
    [ "$SERVING" = 1 ] && "$BIN" bench --model $MODEL --num-prompts 64 --input-len 256 --output-len 64 --request-rate inf --seed 1 \
      --max-num-seqs 64 --max-num-batched-tokens 2048 $COMPUTE --quiet \
      --save-result "$OUT/serving-$arm-$round.json" > /dev/null 2>&1
  done
done
python3 - "$OUT" "$ROUNDS" "$PREFILL_LEN" <<'PY' | tee "$OUT/summary.txt"
import json, sys, statistics
import os
out, rounds, prefill = sys.argv[1], range(1, int(sys.argv[2]) + 1), sys.argv[3]
def load(kind, arm, r):
    path = f"{out}/{kind}-{arm}-{r}.json"
    return json.load(open(path)) if os.path.exists(path) else None
rows = [
    (f"prefill {prefill} (tok/s)", lambda f, s: f["prefillTokensPerSecond"]),
    ("  its attention phase (ms)", lambda f, s: f["prefillProfile"]["attentionSeconds"] * 1e3),
    ("  its feed-forward phase (ms)", lambda f, s: f["prefillProfile"]["feedForwardSeconds"] * 1e3),
    ("decode batch 1 (tok/s)", lambda f, s: f["decode"][0]["tokensPerSecond"]),
    ("decode batch 16 (tok/s)", lambda f, s: f["decode"][1]["tokensPerSecond"]),
    ("decode batch 64 (tok/s)", lambda f, s: f["decode"][2]["tokensPerSecond"]),
    ("  its attention phase (ms per step)", lambda f, s: f["decode"][2]["profile"]["attentionSeconds"] * 1e3 / f["decode"][2]["profile"]["forwards"]),
    ("serving output throughput (tok/s)", lambda f, s: s["output_throughput"]),
    ("serving mean TTFT (ms)", lambda f, s: s["mean_ttft_ms"]),
    ("serving P99 ITL (ms)", lambda f, s: s["p99_itl_ms"]),
]
print(f"{'metric':38} {'A':>10} {'B':>10} {'B/A':>7}  B/A per round")
for name, get in rows:
    try:
        a = [get(load("forward", "A", r), load("serving", "A", r)) for r in rounds]
        b = [get(load("forward", "B", r), load("serving", "B", r)) for r in rounds]
    except TypeError:
        print(f"{name:38} {'n/a':>10}")
        continue
    ratios = [y / x for x, y in zip(a, b)]
    print(f"{name:38} {statistics.mean(a):10.2f} {statistics.mean(b):10.2f} {statistics.mean(b) / statistics.mean(a):7.3f}  "
          + ", ".join(f"{r:.3f}" for r in ratios))
PY
