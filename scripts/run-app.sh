#!/usr/bin/env bash
# Install, then launch the web app on http://127.0.0.1:7860 (extra flags go to `python -m app`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Fewer glibc malloc arenas: a threaded server's RSS then stops creeping (the app also caps them
# in-process when this is unset, for a Gradio-SDK Space that never runs this script).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "${PYTHON:-python3}" -m app "$@"
