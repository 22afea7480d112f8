#!/usr/bin/env bash
# Switchyard against llama.cpp on the same checkpoint (the `compare` preset),
# alternated ROUNDS times (default 2) in one run: prefill 512 and batch-1
# decode, tok/s, with a ratio table at the end (needs python3).
# llama.cpp is built from the vendored copy in llama-cpp-python's sdist and
# the checkpoint converted to a BF16 GGUF (shared/notes/cpu-compute.md);
# nothing of it is committed. Usage:
#   scripts/bench-vs-llamacpp.sh PATH/TO/llama-bench PATH/TO/compare-bf16.gguf [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
LB=$1; GGUF=$2; OUT=${3:-docs/results/vs-llamacpp.txt}; ROUNDS=${ROUNDS:-2}
BIN=.build/release/switchyard
MODEL=bench-models/compare-qwen3_moe
: > "$OUT"
for round in $(seq "$ROUNDS"); do
  echo "== round $round: llama.cpp (llama-bench -t 2 -p 512 -n 64, BF16 GGUF)" | tee -a "$OUT"
  "$LB" -m "$GGUF" -t 2 -p 512 -n 64 -r 3 2>/dev/null | tee -a "$OUT"
  echo "== round $round: switchyard forward-bench --gemm onednn --dtype bfloat16" | tee -a "$OUT"
  "$BIN" forward-bench --model $MODEL --batch-sizes 1 --decode-steps 32 --prefill-len 512 --gemm onednn --dtype bfloat16 2>/dev/null | tee -a "$OUT"
done
python3 - "$OUT" <<'PY' | tee -a "$OUT"
import re, sys, statistics
text = open(sys.argv[1]).read()
rounds = text.split("== round ")[1:]
llama = {"pp512": [], "tg64": []}
ours = {"prefill": [], "decode": []}
for block in rounds:
    for test in llama:
        m = re.search(rf"\|\s+{test}\s+\|\s+([0-9.]+)", block)
        if m: llama[test].append(float(m.group(1)))
    m = re.search(r"prefill 512 tokens: ([0-9.]+) tok/s", block)
    if m: ours["prefill"].append(float(m.group(1)))
    m = re.search(r"^\s+1\s+([0-9.]+)\s+[0-9.]+\s+[0-9.]+%", block, re.M)
    if m: ours["decode"].append(float(m.group(1)))
print("== ratios, Switchyard / llama.cpp, per round and of the means")
for name, a, b in (("prefill 512", llama["pp512"], ours["prefill"]), ("decode batch 1", llama["tg64"], ours["decode"])):
    print(f"{name:16} llama.cpp {statistics.mean(a):7.1f}  switchyard {statistics.mean(b):7.1f}  ratio {statistics.mean(b) / statistics.mean(a):.2f}x  per round "
          + ", ".join(f"{y / x:.2f}" for x, y in zip(a, b)))
PY
