#!/usr/bin/env bash
# Placement solver scaling (docs/placement.md): the ilp placement on the real
# Mixtral-8x7B profile and on synthetic skewed profiles from 8 experts x 2
# devices up to 256 experts x 32 devices x 60 layers, each with a 60 s limit
# (10 s for Mixtral, the bar), next to linear on the same profile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-packages.sh
swift build -c release --product switchyard
BIN=.build/release/switchyard
OUT=$(mktemp -d)
TRACE=../shared/data/routing/mixtral-8x7b
if [ -f $TRACE/gsm8k_2_routing.jsonl ]; then
  $BIN profile import --trace $TRACE/gsm8k_2_routing.jsonl $TRACE/humaneval_2_routing.jsonl \
    --layers 32 --experts 8 --output $OUT/mixtral.json > /dev/null
  for p in linear balanced ilp; do
    echo "== mixtral-8x7b, 4 devices, $p"
    $BIN place --profile $OUT/mixtral.json --devices 4 --placement $p | tail -n +2
  done
fi
# experts devices layers top-k
for shape in "8 2 8 2" "16 4 16 2" "64 8 32 4" "128 16 48 8" "256 32 60 8"; do
  set -- $shape
  $BIN profile synthetic --experts $1 --layers $3 --top-k $4 --tokens 4096 --skew 1.0 --affinity 0.3 --seed 0 \
    --output $OUT/syn.json > /dev/null
  echo "== synthetic E=$1 devices=$2 L=$3 k=$4, linear"
  $BIN place --profile $OUT/syn.json --devices $2 --placement linear | tail -n +2
  echo "== synthetic E=$1 devices=$2 L=$3 k=$4, ilp"
  $BIN place --profile $OUT/syn.json --devices $2 --placement ilp --placement-config '{"time_limit_s": 60}' | tail -n +2
done
