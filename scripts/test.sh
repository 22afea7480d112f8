#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine (installs system packages first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-packages.sh
swift test "$@"
