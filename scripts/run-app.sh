#!/usr/bin/env bash
# Install, then launch the web app on http://127.0.0.1:7860 (extra flags go to `python -m app`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m app "$@"
