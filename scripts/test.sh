#!/usr/bin/env bash
# Sets everything up, then lints and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The browser test (tests/notebooks/test_browser.py) drives a Chromium through Playwright,
# which cannot download browsers here: install Debian's package when it is missing and
# apt-get can. Elsewhere (another distribution, macOS) go on: the test looks for another
# Chromium and, without one, is skipped with the reason.
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: no /usr/bin/chromium and no apt-get to install it; the browser test" \
      "uses a Chromium on the PATH, in /Applications, Playwright's own" \
      "(.venv/bin/python -m playwright install chromium) or \$ROMANCY_CHROMIUM," \
      "and is skipped without one" >&2
  elif ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium; }; then
    echo "warning: apt-get could not install chromium; the browser test looks for another" \
      "Chromium and is skipped without one" >&2
  fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
