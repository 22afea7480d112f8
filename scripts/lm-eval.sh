#!/usr/bin/env bash
# lm-evaluation-harness against `switchyard serve` on the bundled model, with
# the two small local tasks in tools/lm-eval/tasks (multiple choice through
# loglikelihood = echo + logprobs requests, and generate_until). Needs
# `pip install "lm-eval[api]"` (not needed by CI: the same API features are covered
# by Swift tests against the model's own logits). Usage:
#   scripts/lm-eval.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/results/lm-eval}
PORT=${PORT:-8931}
BIN=.build/release/switchyard
[ -x "$BIN" ] || swift build -c release --product switchyard
MODEL=models/stdlib-moe
"$BIN" serve --model $MODEL --port $PORT --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 0.5; done
mkdir -p "$OUT"
python3 -m lm_eval --model local-completions \
  --model_args "model=$MODEL,base_url=http://127.0.0.1:$PORT/v1/completions,tokenizer_backend=huggingface,tokenizer=$MODEL,num_concurrent=4,max_retries=1" \
  --include_path tools/lm-eval/tasks --tasks switchyard_mc,switchyard_gen \
  --output_path "$OUT" --log_samples 2>&1 | tee "$OUT/run.txt"
