#!/usr/bin/env bash
# Expert-parallel execution on CPU core pools (docs/placement.md, "Real
# execution"): the default model served with `--execution cpu-ep --devices 2`
# under three placements, A/B against linear on the identical workload.
#
# 1. record a routing profile on one half of the stdlib prompts;
# 2. A/B linear vs balanced and linear vs ilp (both fitted to that profile)
#    on the other half, alternating arms, several repeats.
#
# The prompt files were made with (Python 3.11, stdlib path from sysconfig):
#   files = sorted(*.py in stdlib); random.seed(0); random.shuffle(files)
#   per half: a 600-1400 character excerpt starting at a line boundary of
#   each module longer than 4000 characters, 64 per half, max_tokens 32.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-packages.sh
swift build -c release --product switchyard
BIN=.build/release/switchyard
MODEL=models/stdlib-moe
REPEATS=${REPEATS:-3}
mkdir -p docs/results
PROFILE=docs/results/stdlib-moe-profile.json
$BIN bench --model $MODEL --jsonl scripts/data/stdlib-prompts-profile.jsonl --request-rate inf --seed 0 --quiet \
  --record-routing $PROFILE > /dev/null
for p in balanced ilp; do
  $BIN place --profile $PROFILE --devices 2 --placement linear | sed -n 2,3p
  $BIN place --profile $PROFILE --devices 2 --placement $p | sed -n 2,5p
done
EP="--execution cpu-ep --devices 2"
for p in balanced ilp; do
  $BIN ab --a "$EP --placement linear" --b "$EP --placement $p --placement-profile $PROFILE" \
    --model $MODEL --jsonl scripts/data/stdlib-prompts-eval.jsonl --request-rate inf --seed 0 \
    --repeats "$REPEATS" --save-result docs/results/ab-ep-linear-vs-$p.json
done

# Part 2: the bench preset (64 experts of 1.5 MiB, top-4, so the expert phase
# is most of the forward) with skewed routers (--router-skew 8; random routers
# route almost uniformly), prefill-heavy workload; profile recorded with seed
# 1, A/B measured on seed 2's prompts.
SKEWED=bench-models/bench-skewed-qwen3_moe
[ -f "$SKEWED/model.safetensors" ] || $BIN model create --arch qwen3_moe --preset bench --out $SKEWED --seed 0 --router-skew 8
SPROFILE=$(mktemp)
W="--num-prompts 16 --input-len 1024 --output-len 4 --request-rate inf"
$BIN bench --model $SKEWED $W --seed 1 --quiet --record-routing $SPROFILE > /dev/null
for p in linear balanced ilp; do
  echo "== bench-skewed profile, 2 devices, $p"
  $BIN place --profile $SPROFILE --devices 2 --placement $p | sed -n 2,3p
done
for p in balanced ilp; do
  $BIN ab --a "$EP --placement linear" --b "$EP --placement $p --placement-profile $SPROFILE" \
    --model $SKEWED $W --seed 2 --repeats "${REPEATS_SKEWED:-3}" --save-result docs/results/ab-ep-skewed-linear-vs-$p.json
done
