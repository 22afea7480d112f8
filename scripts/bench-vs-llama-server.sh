#!/usr/bin/env bash
# Switchyard's server against llama.cpp's llama-server on the same checkpoint
# (the `compare` preset; its BF16 GGUF as for scripts/bench-vs-llamacpp.sh),
# both driven over HTTP by the same client, `switchyard bench --base-url`,
# on the native-compute issue's workload: 64 requests x 256 prompt / 64
# output tokens, all at t=0, token-id prompts on /v1/completions. Each server
# runs alone on the machine; the two alternate for ROUNDS rounds (default 2).
# llama-server: 2 threads, 32 slots, 32768 tokens of context (its shared
# notes' run); Switchyard: up to 64 sequences and 2048 tokens per iteration,
# oneDNN bfloat16. Usage:
#   scripts/bench-vs-llama-server.sh PATH/TO/llama-server PATH/TO/compare-bf16.gguf [OUT_DIR]
# SUMMARY_ONLY=1 redoes the table from the saved runs. Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
LS=$1; GGUF=$2; OUT=${3:-docs/results/vs-llama-server}; ROUNDS=${ROUNDS:-2}
BIN=.build/release/switchyard
MODEL=bench-models/compare-qwen3_moe
PORT=${PORT:-8517}
mkdir -p "$OUT"
WORKLOAD="--model $MODEL --num-prompts 64 --input-len 256 --output-len 64 --request-rate inf --seed 1 --endpoint /v1/completions"

wait_ready() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null 2>&1 && return 0
    kill -0 "$1" 2> /dev/null || { echo "server exited before it was ready" >&2; return 1; }
    sleep 1
  done
  echo "server not ready after 600 s" >&2
  return 1
}

run_arm() { # name, then the server command
  local name=$1 round=$2; shift 2
  echo "== round $round: $name" >&2
  "$@" > "$OUT/server-$name-$round.log" 2>&1 &
  local pid=$!
  wait_ready $pid
  "$BIN" bench $WORKLOAD --base-url "http://127.0.0.1:$PORT" --label "$name" --save-result "$OUT/$name-$round.json" \
    > "$OUT/bench-$name-$round.txt" 2>&1 || { kill $pid; return 1; }
  kill $pid; wait $pid 2> /dev/null || true
}

[ "${SUMMARY_ONLY:-0}" = 1 ] || for round in $(seq "$ROUNDS"); do
  run_arm llama-server "$round" "$LS" -m "$GGUF" -t 2 -np 32 -c 32768 --host 127.0.0.1 --port "$PORT"
  run_arm switchyard "$round" "$BIN" serve --model "$MODEL" --port "$PORT" --gemm onednn --dtype bfloat16 \
    --max-num-seqs 64 --max-num-batched-tokens 2048
done
python3 - "$OUT" "$ROUNDS" <<'PY' | tee "$OUT/summary.txt"
import json, sys, statistics
out, rounds = sys.argv[1], range(1, int(sys.argv[2]) + 1)
def load(arm, r): return json.load(open(f"{out}/{arm}-{r}.json"))
rows = [("completed requests", "completed"), ("output throughput (tok/s)", "output_throughput"),
        ("mean TTFT (ms)", "mean_ttft_ms"), ("mean TPOT (ms)", "mean_tpot_ms"), ("P99 ITL (ms)", "p99_itl_ms")]
print(f"{'metric':28} {'llama-server':>13} {'switchyard':>11} {'ratio':>7}  ratio per round")
for name, key in rows:
    a = [load("llama-server", r)[key] for r in rounds]
    b = [load("switchyard", r)[key] for r in rounds]
    print(f"{name:28} {statistics.mean(a):13.2f} {statistics.mean(b):11.2f} {statistics.mean(b) / statistics.mean(a):7.3f}  "
          + ", ".join(f"{y / x:.3f}" for x, y in zip(a, b)))
PY
