#!/usr/bin/env bash
# Sets everything up, then opens JupyterLab on notebooks/ (the examples) and prints its URL.
# Extra arguments go to `jupyter lab` (e.g. --no-browser, --port 8899).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/jupyter lab --ServerApp.root_dir=notebooks "$@"
