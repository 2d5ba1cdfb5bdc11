#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command; CI runs it too).
# Installs Debian's chromium for the browser tests (needs root or sudo) and the Python packages
# into the active Python environment, then runs pytest with one worker per core, at most four
# (pytest-xdist; each test file stays on one worker, so a module's app and browser start once).
# Extra arguments go to pytest; `-n 0` runs everything in this one process.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# Test artefacts (screenshots, reports) land here; CI keeps them beside the run.
export POSTURE_TEST_OUTPUT="${POSTURE_TEST_OUTPUT:-$PWD/test-output}"
mkdir -p "$POSTURE_TEST_OUTPUT"
workers=$(nproc)
exec python -m pytest -n "$(( workers < 4 ? workers : 4 ))" --dist loadfile "$@"
