#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (long tests included, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff (lint, 120 columns)"
.venv/bin/ruff check ltvl tests bench sweeps
exec .venv/bin/python -m pytest "$@"
