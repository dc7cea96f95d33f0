#!/usr/bin/env bash
# Install what Finer-CAM Studio needs into the current Python. `--dev` adds the test tools and
# the Debian Chromium the browser tests drive (Playwright never downloads its own browser).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt
"$PYTHON" -m pip install --quiet --disable-pip-version-check -r "$requirements"
if [ "${1:-}" = "--dev" ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
