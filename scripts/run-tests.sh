#!/usr/bin/env bash
# Install (with test tools and Chromium), lint and format-check with ruff, then run the whole offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
"${PYTHON:-python3}" -m ruff check .
"${PYTHON:-python3}" -m ruff format --check .
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "${PYTHON:-python3}" -m pytest -q "$@"
