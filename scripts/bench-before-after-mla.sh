#!/usr/bin/env bash
# Two builds on DeepSeek's latent attention, alternated: forward-bench on the
# DeepSeek-V2-Lite-shaped checkpoint, prefill of 256 and of 2048 tokens (and
# the batch-1 decode after each), bfloat16 mode. Usage:
#   scripts/bench-before-after-mla.sh BIN_A BIN_B [OUT_DIR]
# (BIN_A from `git worktree add /tmp/before <rev> && (cd /tmp/before && swift build -c release)`).
# SUMMARY_ONLY=1 redoes the table from the saved runs. Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; OUT=${3:-docs/results/before-after-mla}; ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT" bench-models
MODEL=bench-models/dsv2lite-shaped
[ -f "$MODEL/model.safetensors" ] || "$B" model create --arch deepseek_v2 --preset deepseek-v2-lite-shaped --out "$MODEL" --seed 0
[ "${SUMMARY_ONLY:-0}" = 1 ] || for round in $(seq "$ROUNDS"); do
  for arm in A B; do
    BIN=$A; [ $arm = B ] && BIN=$B
    for len in 256 2048; do
      echo "== round $round, arm $arm ($BIN), prefill $len" >&2
      "$BIN" forward-bench --model $MODEL --batch-sizes 1 --context 64 --decode-steps 8 --prefill-len $len \
        --gemm onednn --dtype bfloat16 --save-result "$OUT/forward-$len-$arm-$round.json" > /dev/null 2>&1
    done
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY' | tee "$OUT/summary.txt"
import json, sys, statistics
out, rounds = sys.argv[1], range(1, int(sys.argv[2]) + 1)
def load(len_, arm, r): return json.load(open(f"{out}/forward-{len_}-{arm}-{r}.json"))
rows = []
for n in (256, 2048):
    rows += [(f"prefill {n} (tok/s)", n, lambda f: f["prefillTokensPerSecond"]),
             (f"  attention phase of prefill {n} (ms)", n, lambda f: f["prefillProfile"]["attentionSeconds"] * 1e3),
             (f"  decode batch 1 after it (tok/s)", n, lambda f: f["decode"][0]["tokensPerSecond"])]
print(f"{'metric':40} {'A':>9} {'B':>9} {'B/A':>6}  B/A per round")
for name, n, get in rows:
    a = [get(load(n, "A", r)) for r in rounds]
    b = [get(load(n, "B", r)) for r in rounds]
    print(f"{name:40} {statistics.mean(a):9.2f} {statistics.mean(b):9.2f} {statistics.mean(b) / statistics.mean(a):6.3f}  "
          + ", ".join(f"{y / x:.3f}" for x, y in zip(a, b)))
PY
