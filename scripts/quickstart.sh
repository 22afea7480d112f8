#!/usr/bin/env bash
# The main job on a fresh machine: install system packages, build the release
# binary, and generate a continuation with the bundled default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-packages.sh
swift build -c release --product switchyard
exec .build/release/switchyard generate --model models/stdlib-moe \
  --prompt "${1:-def parse_args(argv):}" --max-tokens "${2:-96}" --temperature 0.7 --top-p 0.9 --seed 0
