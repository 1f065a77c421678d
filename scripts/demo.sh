#!/usr/bin/env bash
# Sets everything up, then runs the headless demo: an order workflow whose saga compensates.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/romancy-nb demo --db "${1:-demo.db}"
