#!/usr/bin/env bash
# The new-family measurements in docs/performance.md ("DeepSeek and gpt-oss
# shapes"): forward-bench on a DeepSeek-V2-Lite-shaped and a gpt-oss-20b-
# shaped (MXFP4 experts) random checkpoint, each with the AVX512-BF16
# matrix-vector kernels and with the portable Swift ones
# (SWITCHYARD_PORTABLE_MATVEC=1), the arms alternated in one run so every
# ratio is taken between neighbours on this shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
swift build -c release >/dev/null
BIN=.build/release/switchyard
mkdir -p bench-models
DS=bench-models/dsv2lite-shaped
OSS=bench-models/gpt-oss-20b-shaped-mxfp4
[ -f "$DS/model.safetensors" ] || $BIN model create --arch deepseek_v2 --preset deepseek-v2-lite-shaped --out "$DS" --seed 0
[ -f "$OSS/model.safetensors" ] || $BIN model create --arch gpt_oss --preset gpt-oss-20b-shaped --mxfp4-experts --out "$OSS" --seed 0
OUT=docs/results/forward-bench-families.txt
: > $OUT
for round in $(seq "$ROUNDS"); do
  for model in "$DS" "$OSS"; do
    for arm in native portable; do
      echo "== round $round: $model, $arm matrix-vector kernels" | tee -a $OUT
      if [ $arm = portable ]; then export SWITCHYARD_PORTABLE_MATVEC=1; else unset SWITCHYARD_PORTABLE_MATVEC; fi
      $BIN forward-bench --model "$model" --batch-sizes 1,16 --context 64 --decode-steps 16 --prefill-len 256 2>/dev/null \
        | tee -a $OUT
    done
  done
done
unset SWITCHYARD_PORTABLE_MATVEC
