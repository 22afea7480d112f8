#!/usr/bin/env bash
# What can be checked on a GPU host today, from the release bundle
# (scripts/bundle.sh; the host needs no Swift): the hybrid executor's CUDA
# discovery on real hardware (driver version, devices and their memory
# through the primary context, cuBLAS and NVRTC found), with and without the
# user's library path. Results go to OUT_DIR (default $OUT, or
# docs/results/gpu-check). The hybrid executor's GPU compute is not written
# yet, so nothing here computes on the GPU; this script grows with it.
# Usage: scripts/gpu-check.sh BUNDLE_DIR [OUT_DIR]
set -uo pipefail
BUNDLE=${1:?usage: scripts/gpu-check.sh BUNDLE_DIR [OUT_DIR]}
OUT=${2:-${OUT:-docs/results/gpu-check}}
mkdir -p "$OUT"
SY="$BUNDLE/switchyard"
{
  echo "== date: $(date -u +%FT%TZ)"
  echo "== nvidia-smi"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv 2>&1 || echo "nvidia-smi not available"
  echo "== switchyard topology (default search)"
  "$SY" topology 2>&1
  # The CUDA 13 pip wheels, if this host's Python has them.
  WHEELS=$(python3 -c 'import nvidia, os; print(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia", "cu13", "lib"))' 2>/dev/null || true)
  if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
    echo "== switchyard topology with SWITCHYARD_CUDA_LIBRARY_PATH=$WHEELS"
    SWITCHYARD_CUDA_LIBRARY_PATH="$WHEELS" "$SY" topology 2>&1
  fi
} | tee "$OUT/topology.txt"
