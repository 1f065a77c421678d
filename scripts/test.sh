#!/usr/bin/env bash
# Sets everything up, then lints and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# Debian packages the tests need, installed when missing and apt-get can (CI: a fresh Debian
# machine, as root), with one apt-get update for all of them:
# - chromium: the browser test (tests/notebooks/test_browser.py) drives it through
#   Playwright, which cannot download browsers here. Without it the test looks for another
#   Chromium (macOS, Playwright's own) and is skipped with the reason.
# - postgresql: the PostgreSQL runs of the suite start a private server from its binaries
#   (tests/postgres_server.py). Without them those tests fail, never skip.
has_postgres() {
  [ -n "${ROMANCY_PG_BIN:-}" ] || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ||
    command -v initdb >/dev/null 2>&1
}
MISSING=()
[ -x /usr/bin/chromium ] || MISSING+=(chromium)
has_postgres || MISSING+=(postgresql)
if [ "${#MISSING[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: no apt-get to install ${MISSING[*]}" >&2
  elif ! $SUDO apt-get update -q; then
    echo "warning: apt-get update failed; not installing ${MISSING[*]}" >&2
  else
    for package in "${MISSING[@]}"; do # one at a time: one that fails does not stop the other
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$package" ||
        echo "warning: apt-get could not install $package" >&2
    done
  fi
  if [ ! -x /usr/bin/chromium ]; then
    echo "warning: no /usr/bin/chromium: the browser test uses a Chromium on the PATH, in" \
      "/Applications, Playwright's own (.venv/bin/python -m playwright install chromium)" \
      "or \$ROMANCY_CHROMIUM, and is skipped without one" >&2
  fi
  if ! has_postgres; then
    echo "warning: no PostgreSQL server binaries: the PostgreSQL tests will fail; install" \
      "them (Debian: apt-get install postgresql) or set \$ROMANCY_PG_BIN to their folder" >&2
  fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
