#!/usr/bin/env bash
# The hybrid executor's checks on a GPU host, from the release bundle
# (scripts/bundle.sh; the host needs no Swift, only the NVIDIA driver and
# cuBLAS/NVRTC, e.g. the CUDA 13 pip wheels). Writes every result to
# OUT_DIR (default $OUT, else docs/results/gpu-check) and takes a few
# minutes. Usage:
#   [STEPS="1 2 ..."] [WORKDIR=DIR] scripts/gpu-check.sh BUNDLE [OUT_DIR]
# (BUNDLE: the unpacked directory or the .tar.xz; STEPS: which of the steps
# below, all by default; WORKDIR keeps the 3.2 GB model between calls.)
# 1. CUDA discovery: driver, devices, cuBLAS, NVRTC (switchyard topology).
# 2. Correctness (read the worst difference with the argmax count: the GPU
#    sums in another order, and one BF16 rounding falling the other way can
#    change a later layer's routing and a logit by far more than rounding;
#    docs/architecture.md, "The software CUDA device"): logits of
#    --execution hybrid against --execution cpu (both
#    bfloat16) on a committed BF16 reference checkpoint and on a 3.2 GB
#    random one, with GPU budgets that leave experts resident, uploaded and
#    on the CPU; greedy continuations compared token for token.
#    The same on a DeepSeek-V3 reference checkpoint (latent attention).
#    Also dense products alone on the GPU (cpu_moe) and experts alone
#    (dense: false), and gpt-oss's form (MXFP4 experts on the CPU with
#    cpu_moe; attention with sinks and a sliding window on the GPU).
# 3-9. Speed: the same serving workload on the 3.2 GB model with a 1 GiB
#    budget, one `switchyard ab` run each (ratios B/A, B hybrid): against
#    cpu (3), llama.cpp's all-experts-on-CPU form with dense products on
#    the GPU (4), uploading every cold expert (5), experts alone on the GPU
#    (6), expert rows crossing per assignment, device_combine off (7), the
#    residual stream sent back every MoE layer, device_residual off (8),
#    prompts' attention through the kernels instead of cuBLAS's products, on
#    4000-token prompts (9).
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:?usage: scripts/gpu-check.sh BUNDLE [OUT_DIR]}
OUT=${2:-${OUT:-docs/results/gpu-check}}
mkdir -p "$OUT"
if [ -f "$BUNDLE" ]; then
  UNPACK=$(mktemp -d); tar -C "$UNPACK" -xJf "$BUNDLE"; BUNDLE=$(echo "$UNPACK"/switchyard-*)
fi
SY="$BUNDLE/switchyard"
WHEELS=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
# A path the caller set is searched first.
[ -n "$WHEELS" ] && [ -d "$WHEELS" ] && export SWITCHYARD_CUDA_LIBRARY_PATH="${SWITCHYARD_CUDA_LIBRARY_PATH:+$SWITCHYARD_CUDA_LIBRARY_PATH:}$WHEELS"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

# STEPS picks steps, so a device with a per-call time limit can take them
# over several calls ("1 2 3" first: discovery, correctness, and hybrid
# against cpu, the ones to have where device time is short (their length
# on a GPU host is not measured); then "4 5 6", then "7 8 9"); the 3.2 GB
# model is made once under WORKDIR
# and reused by later calls on the same machine.
STEPS=${STEPS:-1 2 3 4 5 6 7 8 9}
want() { [[ " $STEPS " == *" $1 "* ]]; }
WORKDIR=${WORKDIR:-/tmp/switchyard-gpu-check}
mkdir -p "$WORKDIR"
BIG=$WORKDIR/compare
big() { [ -f "$BIG/config.json" ] || "$SY" model create --arch qwen3_moe --preset compare --out "$BIG" --seed 0 > /dev/null 2>&1; }

if want 1; then
log "1. discovery ($(date -u +%FT%TZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv > "$OUT/nvidia-smi.txt" 2>&1
"$SY" topology > "$OUT/topology.txt" 2>&1
cat "$OUT/topology.txt" | tee -a "$OUT/summary.txt"
fi

BF16=--dtype\ bfloat16
compare_logits() {  # name model tokens gpu_memory [extra execution-config entries]
  local name=$1 model=$2 tokens=$3 budget=$4 extra=${5:+, $5}
  "$SY" logits --model "$model" --tokens "$tokens" $BF16 --execution cpu > "$OUT/logits-$name-cpu.json" 2> "$OUT/logits-$name-cpu.err"
  "$SY" logits --model "$model" --tokens "$tokens" $BF16 --execution hybrid \
    --execution-config "{\"gpu_memory\": \"$budget\"$extra}" > "$OUT/logits-$name-hybrid.json" 2> "$OUT/logits-$name-hybrid.err"
  python3 - "$OUT/logits-$name-cpu.json" "$OUT/logits-$name-hybrid.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
try:
    a, b = (json.load(open(p))["logits"] for p in sys.argv[1:3])
except Exception as e:
    print(f"  {sys.argv[2]}: no logits ({e}); see the .err file"); sys.exit(0)
worst = max(abs(x - y) / (1 + abs(y)) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
argmax = sum(max(range(len(ra)), key=ra.__getitem__) == max(range(len(rb)), key=rb.__getitem__) for ra, rb in zip(a, b))
print(f"  {sys.argv[2].split('/')[-1]}: worst relative difference vs cpu {worst:.2e}, argmax equal at {argmax}/{len(a)} positions")
PY
  grep -h "resident\|crossover\|error\|Error" "$OUT/logits-$name-hybrid.err" | head -5 | tee -a "$OUT/summary.txt"
}
compare_greedy() {  # name model tokens gpu_memory: generate prints the new token ids on stdout
  local name=$1 model=$2 tokens=$3 budget=$4
  "$SY" generate --model "$model" --tokens "$tokens" --max-tokens 16 --ignore-eos $BF16 --execution cpu \
    > "$OUT/greedy-$name-cpu.txt" 2> "$OUT/greedy-$name-cpu.err"
  "$SY" generate --model "$model" --tokens "$tokens" --max-tokens 16 --ignore-eos $BF16 --execution hybrid \
    --execution-config "{\"gpu_memory\": \"$budget\"}" > "$OUT/greedy-$name-hybrid.txt" 2> "$OUT/greedy-$name-hybrid.err"
  if [ -s "$OUT/greedy-$name-hybrid.txt" ] && cmp -s "$OUT/greedy-$name-cpu.txt" "$OUT/greedy-$name-hybrid.txt"; then
    log "  greedy $name: identical ($(cat "$OUT/greedy-$name-cpu.txt"))"
  else
    log "  greedy $name: DIFFERENT or missing: cpu $(cat "$OUT/greedy-$name-cpu.txt"), hybrid $(cat "$OUT/greedy-$name-hybrid.txt")"
  fi
}

if want 2; then
log "2. correctness"
REF=Tests/SwitchyardModelTests/Fixtures/models/qwen3_moe_bf16_sharded
TOKENS=$(python3 -c 'import json; print(",".join(map(str, json.load(open("'$REF'/reference.json"))["tokens"])))')
compare_logits ref-small "$REF" "$TOKENS" 128KiB
compare_greedy ref-small "$REF" "$TOKENS" 128KiB
# DeepSeek-V3's latent attention whole on the GPU (transformers' checkpoint,
# RoPE not interleaved, two dense layers first).
REF=Tests/SwitchyardModelTests/Fixtures/models/deepseek_v3_noninterleaved_bf16_sharded
TOKENS=$(python3 -c 'import json; print(",".join(map(str, json.load(open("'$REF'/reference.json"))["tokens"])))')
compare_logits ref-deepseek "$REF" "$TOKENS" 96KiB
compare_greedy ref-deepseek "$REF" "$TOKENS" 96KiB
big
LONG=$(python3 -c 'print(",".join(str((i * 53 + 7) % 4096) for i in range(300)))')
compare_logits compare-1GiB "$BIG" "$LONG" 1GiB
compare_greedy compare-1GiB "$BIG" 1,2,3,4,5 1GiB
# Dense products alone on the GPU (llama.cpp's -ngl 99 --cpu-moe split).
compare_logits compare-dense-only "$BIG" "$LONG" 1GiB '"cpu_moe": true'
# Experts alone (dense products on the CPU).
compare_logits compare-experts-only "$BIG" "$LONG" 1GiB '"dense": false'
# gpt-oss's form (MXFP4 experts with biases, kept on the CPU by cpu_moe;
# attention with sinks and a 128-position window, which 300 tokens pass).
GOSS=$(mktemp -d)/gpt-oss
"$SY" model create --arch gpt_oss --preset tiny --mxfp4-experts --out "$GOSS" --seed 0 > /dev/null 2>&1
compare_logits gpt-oss-cpu-moe "$GOSS" "$(python3 -c 'print(",".join(str((i * 53 + 7) % 384) for i in range(300)))')" 64MiB '"cpu_moe": true'

fi

# 3-9. Speed: each one `switchyard ab` run on the same workload, B/A ratios.
WORK="--num-prompts 64 --input-len 256 --output-len 32 --request-rate inf --seed 1 --max-num-seqs 64 --max-num-batched-tokens 2048"
HYBRID="--execution hybrid $BF16 --execution-config '{\"gpu_memory\":\"1GiB\"}'"
ab() {  # step name what A [workload, described]
  want "$1" || return 0
  big
  log "$1. speed, $3 against hybrid (${6:-64 requests x 256 prompt / 32 output tokens}, all at t=0)"
  "$SY" ab --model "$BIG" ${5:-$WORK} --a "$4" --b "$HYBRID" --save-result "$OUT/ab-$2.json" > "$OUT/ab-$2.txt" 2>&1
  tail -15 "$OUT/ab-$2.txt" | tee -a "$OUT/summary.txt"
  hybrid_counters "$OUT/ab-$2.json" | tee -a "$OUT/summary.txt"
}
# The figures to read first, per arm that ran hybrid: the host's waits for
# the GPU against the forward time, where the experts' tokens went, what
# crossed, and the CPU's share of the expert phase.
hybrid_counters() {
  python3 - "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"  no result ({e})"); sys.exit(0)
for arm in ("a", "b"):
    for r in d[arm]["runs"]:
        c = r.get("devices", {}).get("executor_counters", {})
        if "hybrid_gpu_host_waits" not in c:
            continue
        forward = r["engine"]["time_s"]["forward"]
        wait = c["hybrid_gpu_host_wait_seconds"]
        print(f"  {arm}: forward {forward:.2f} s, host waiting on the GPU {wait:.2f} s ({wait / forward:.0%}) in {c['hybrid_gpu_host_waits']:.0f} waits;"
              f" expert tokens resident {c['hybrid_resident_tokens']:.0f}, uploaded {c['hybrid_uploaded_tokens']:.0f}, cpu {c['hybrid_cpu_tokens']:.0f}"
              f" (hit rate {c['hybrid_resident_hit_rate']:.2f}); host-to-device {c['hybrid_host_to_device_bytes'] / 2**20:.0f} MiB,"
              f" swaps {c['hybrid_swaps']:.0f}; CPU share of the expert phase {c['hybrid_cpu_time_share']:.2f}; fallbacks {c['hybrid_fallbacks']:.0f};"
              f" expert phase {c['hybrid_expert_phase_seconds']:.2f} s measured against {c['hybrid_planned_expert_phase_seconds']:.2f} s planned")
PY
}
hybrid_with() { echo "--execution hybrid $BF16 --execution-config '{\"gpu_memory\":\"1GiB\",$1}'"; }
ab 3 cpu-vs-hybrid "cpu" "--execution cpu $BF16"
ab 4 cpumoe-vs-hybrid "llama.cpp's --cpu-moe (dense on the GPU, every expert on the CPU)" "$(hybrid_with '"cpu_moe":true')"
ab 5 uploadall-vs-hybrid "uploading every cold expert" "$(hybrid_with '"upload_all":true')"
ab 6 expertsonly-vs-hybrid "experts alone on the GPU" "$(hybrid_with '"dense":false')"
# Expert rows crossing one per assignment both ways against gathered and
# summed on the GPU (hybrid_gpu_expert_row_bytes_in/out in both results).
ab 7 rows-vs-summed "expert rows per assignment (device_combine off)" "$(hybrid_with '"device_combine":false,"device_residual":false')"
# The residual stream over and back every MoE layer against kept on the GPU
# (hybrid_gpu_host_waits and hybrid_gpu_residual_bytes in both results).
ab 8 residual-each-layer "the residual stream sent back each layer (device_residual off)" "$(hybrid_with '"device_residual":false')"
# Prompts' attention through the kernels against through cuBLAS's products,
# on long prompts, where attention weighs (hybrid_gpu_attention_gemm_sequences
# in both results; TTFT is the figure).
ab 9 attention-kernels "prompts' attention through the kernels (attention_gemm_min_tokens 0)" "$(hybrid_with '"attention_gemm_min_tokens":0')" \
  "--num-prompts 8 --input-len 4000 --output-len 8 --request-rate inf --seed 1 --max-num-seqs 8 --max-num-batched-tokens 4096" \
  "8 requests x 4000 prompt / 8 output tokens"
log "done (steps: $STEPS) $(date -u +%FT%TZ)"
