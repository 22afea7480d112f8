#!/usr/bin/env bash
# Installs the system libraries Switchyard links against, if any is missing:
# OpenBLAS (cblas), libnuma, hwloc, COIN-OR CBC (the MILP solver of the `ilp`
# placement), oneDNN (the default GEMM backend: headers at build time, the
# library opened at run time), and pkg-config to find them.
# Runs `apt-get update` once, then `apt-get install -y` of what is missing.
set -euo pipefail
PACKAGES=(libopenblas-dev libnuma-dev libhwloc-dev coinor-libcbc-dev libdnnl-dev pkg-config)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: missing ${missing[*]} and apt-get is not available; install them with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing ${missing[*]}" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
