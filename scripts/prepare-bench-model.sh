#!/usr/bin/env bash
# Shared set-up of the benchmark scripts: system packages, the release
# binary, and the `bench` preset model in bench-models/ (created once).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-packages.sh
swift build -c release --product switchyard
MODEL=bench-models/bench-qwen3_moe
[ -f "$MODEL/model.safetensors" ] || .build/release/switchyard model create --arch qwen3_moe --preset bench --out "$MODEL" --seed 0
mkdir -p docs/results
