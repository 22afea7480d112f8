#!/usr/bin/env bash
# Two builds on the MXFP4 decode path, alternated: kernel-bench's MXFP4
# matrix-vector row (next to the same run's streaming read) and forward-bench
# on the gpt-oss-20b-shaped checkpoint (MXFP4 experts), decode at batch 1 and
# 16 and a 256-token prefill, bfloat16 mode. Usage:
#   scripts/bench-before-after-mxfp4.sh BIN_A BIN_B [OUT_DIR]
# (BIN_A from `git worktree add /tmp/before <rev> && (cd /tmp/before && swift build -c release)`).
# Needs python3 for the ratio table.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; OUT=${3:-docs/results/before-after-mxfp4}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT" bench-models
MODEL=bench-models/gpt-oss-20b-shaped-mxfp4
[ -f "$MODEL/model.safetensors" ] || "$B" model create --arch gpt_oss --preset gpt-oss-20b-shaped --mxfp4-experts --out "$MODEL" --seed 0
# SUMMARY_ONLY=1 redoes the table from the saved runs.
[ "${SUMMARY_ONLY:-0}" = 1 ] || for round in $(seq "$ROUNDS"); do
  for arm in A B; do
    BIN=$A; [ $arm = B ] && BIN=$B
    echo "== round $round, arm $arm ($BIN)" >&2
    "$BIN" kernel-bench --seconds 0.3 --save-result "$OUT/kernel-$arm-$round.json" > /dev/null 2>&1
    "$BIN" forward-bench --model $MODEL --batch-sizes 1,16 --context 64 --decode-steps 16 --prefill-len 256 \
      --gemm onednn --dtype bfloat16 --save-result "$OUT/forward-$arm-$round.json" > /dev/null 2>&1
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY' | tee "$OUT/summary.txt"
import json, sys, statistics
out, rounds = sys.argv[1], range(1, int(sys.argv[2]) + 1)
def load(kind, arm, r): return json.load(open(f"{out}/{kind}-{arm}-{r}.json"))
rows = [
    ("streaming read (GB/s)", "kernel", lambda k: k["streamingReadGBs"]),
    ("MXFP4 matrix-vector (GB/s)", "kernel", lambda k: k["mxfp4MatVecGBs"]),
    ("  same, of the streaming read", "kernel", lambda k: k["mxfp4MatVecGBs"] / k["streamingReadGBs"]),
    ("decode roofline (tok/s)", "forward", lambda f: f["rooflineDecodeTokensPerSecond"]),
    ("decode batch 1 (tok/s)", "forward", lambda f: f["decode"][0]["tokensPerSecond"]),
    ("  same, of the roofline", "forward", lambda f: f["decode"][0]["fractionOfRoofline"]),
    ("decode batch 16 (tok/s)", "forward", lambda f: f["decode"][1]["tokensPerSecond"]),
    ("prefill 256 (tok/s)", "forward", lambda f: f["prefillTokensPerSecond"]),
]
print(f"{'metric':32} {'A':>9} {'B':>9} {'B/A':>6}  B/A per round")
for name, kind, get in rows:
    a = [get(load(kind, "A", r)) for r in rounds]
    b = [get(load(kind, "B", r)) for r in rounds]
    print(f"{name:32} {statistics.mean(a):9.3f} {statistics.mean(b):9.3f} {statistics.mean(b) / statistics.mean(a):6.3f}  "
          + ", ".join(f"{y / x:.3f}" for x, y in zip(a, b)))
PY
